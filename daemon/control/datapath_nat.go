//go:build engine_nat && !engine_gvisor

package control

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/tgtun/tgtun/daemon/engine"
	"github.com/tgtun/tgtun/netcfg"
)

// dataPath, built with -tags engine_nat, is design (a) of issue 21, kept only to
// compare the engines in one benchmark run: TCP goes into the TUN (with the
// virtio_net_hdr offloads, as engine_gvisor's) and a userspace NAT in the engine
// rewrites it toward a plain listener on the TUN's own address, so the kernel
// terminates it; UDP is the default build's.
type dataPath struct {
	*engine.Engine
	ln *engine.Listener
}

// tunOffloads: TCP segments of up to 64 KiB with partial checksums cross the TUN.
const tunOffloads = true

// The TUN's prefixes in this build: the listener waits on the first address,
// the NAT's rewritten flows come from the next one, which the prefix routes
// into the TUN (a /31 has no broadcast address; ::2 of the /126 is no anycast).
var (
	natPrefix4 = netip.MustParsePrefix("169.254.74.70/31")
	natPrefix6 = netip.MustParsePrefix("fdfe:7467:746e::1/126")
)

func newDataPath(cfg engine.Config, d engine.Dialer, log *slog.Logger) (*dataPath, error) {
	e, err := engine.New(cfg, d, log)
	if err != nil {
		return nil, err
	}
	return &dataPath{Engine: e}, nil
}

// listen opens the NAT's listener (bound ahead of its addresses) and gives spec
// the TUN addresses it needs; TCP stays in the TUN (TProxyPort 0).
func (p *dataPath) listen(spec *netcfg.Spec) error {
	spec.TunAddr4 = natPrefix4
	var l6, f6 netip.Addr
	if spec.IPv6 {
		spec.TunAddr6 = natPrefix6
		l6, f6 = natPrefix6.Addr(), natPrefix6.Addr().Next()
	}
	ln, err := engine.ListenNAT(natPrefix4.Addr(), natPrefix4.Addr().Next(), l6, f6)
	if err != nil {
		return err
	}
	p.ln = ln
	return nil
}

// abandon releases what listen opened, for a data path that will never run.
func (p *dataPath) abandon() {
	if p.ln != nil {
		p.ln.Close()
	}
}

func (p *dataPath) run(ctx context.Context, tunFD int) error {
	return p.Engine.Run(ctx, tunFD, p.ln)
}
