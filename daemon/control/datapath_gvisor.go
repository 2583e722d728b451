//go:build engine_gvisor

package control

import (
	"context"
	"log/slog"

	"github.com/tgtun/tgtun/daemon/engine"
	"github.com/tgtun/tgtun/daemon/enginegv"
)

// dataPath, built with -tags engine_gvisor, is the earlier engine: every marked packet,
// TCP included, goes into the TUN and through gVisor's netstack. Kept only to compare
// the engines in one benchmark run (docs/ARCHITECTURE.md).
type dataPath struct{ e *enginegv.Engine }

// tunOffloads gives the TUN a virtio_net_hdr with checksum and TCP segmentation
// offloads (TGTUN_TUN_OFFLOAD=0 turns them off).
const tunOffloads = true

func newDataPath(cfg engine.Config, d engine.Dialer, log *slog.Logger) (*dataPath, error) {
	e, err := enginegv.New(enginegv.Config{MTU: cfg.MTU, IPv4Only: cfg.IPv4Only, MaxFlows: cfg.MaxFlows,
		MaxFlowsPerDevice: cfg.MaxFlowsPerDevice}, d, log)
	if err != nil {
		return nil, err
	}
	return &dataPath{e: e}, nil
}

func (p *dataPath) listen(bool) (uint16, error)              { return 0, nil }
func (p *dataPath) abandon()                                 {}
func (p *dataPath) run(ctx context.Context, tunFD int) error { return p.e.Run(ctx, tunFD) }
func (p *dataPath) SetDialer(d engine.Dialer)                { p.e.SetDialer(d) }
func (p *dataPath) Done() <-chan struct{}                    { return p.e.Done() }
func (p *dataPath) Err() error                               { return p.e.Err() }

func (p *dataPath) Stats() engine.Stats {
	s := p.e.Stats()
	out := engine.Stats{ActiveTCP: s.ActiveTCP, ActiveUDP: s.ActiveUDP, TotalTCP: s.TotalTCP,
		TotalUDP: s.TotalUDP, Rejected: s.Rejected, DroppedUDP: s.DroppedUDP, BytesUp: s.BytesUp,
		BytesDown: s.BytesDown, PerDeviceLimit: s.PerDeviceLimit, RefusedPerDevice: s.RefusedPerDevice}
	for _, d := range s.TopDevices {
		out.TopDevices = append(out.TopDevices, engine.DeviceFlows{Address: d.Address, Flows: d.Flows})
	}
	return out
}
