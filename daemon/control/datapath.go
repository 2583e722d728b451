package control

import (
	"context"
	"log/slog"

	"github.com/tgtun/tgtun/daemon/engine"
)

// dataPath is the engine control runs on a TUN: TCP on the kernel's stack through the
// engine's transparent listener (netcfg Spec.TProxyPort), UDP through the TUN.
type dataPath struct {
	*engine.Engine
	ln *engine.Listener
}

func newDataPath(cfg engine.Config, d engine.Dialer, log *slog.Logger) (*dataPath, error) {
	e, err := engine.New(cfg, d, log)
	if err != nil {
		return nil, err
	}
	return &dataPath{Engine: e}, nil
}

// listen opens the listener tproxy hands TCP to, before the kernel side that points
// at it is installed; it returns the port for netcfg.
func (p *dataPath) listen(ipv6 bool) (uint16, error) {
	ln, err := engine.Listen(ipv6)
	if err != nil {
		return 0, err
	}
	p.ln = ln
	return ln.Port(), nil
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
