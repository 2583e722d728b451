package control

import (
	"net/netip"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/lists"
	"github.com/tgtun/tgtun/daemon/proxy"
)

// LoadConfig reads and validates the configuration at path as the daemon uses it. It is
// the one validation path: `tgtun config check`, start, reload and `check` all call it,
// so whatever config check accepts the daemon runs, and whatever the daemon would refuse
// config check reports with its file and line.
func LoadConfig(path string) (*config.Config, []config.Warning, error) {
	return config.LoadWith(path, ConfigRules{})
}

// ConfigRules are the daemon's checks on top of config's own: the services the catalogue
// knows, the subnets the lists manager accepts, the proxies the proxy package can build.
type ConfigRules struct{}

var _ config.Rules = ConfigRules{}

// Services lists the catalogue's service names.
func (ConfigRules) Services() []string {
	var names []string
	for _, e := range lists.Catalogue() {
		names = append(names, e.Name)
	}
	return names
}

// CheckSubnet refuses what the lists manager would drop from a custom section.
func (ConfigRules) CheckSubnet(p netip.Prefix) error { return lists.CheckUserPrefix(p) }

// CheckProxy builds the proxy with the constructor the daemon's pool uses. A constructor
// must not start anything (no goroutine, no socket): building is a pure check.
func (ConfigRules) CheckProxy(p config.Proxy) error {
	_, err := proxy.NewMember(proxySpec(p), proxy.Options{})
	return err
}
