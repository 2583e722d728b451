package control

import (
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
)

// FuzzLoadConfigRules runs arbitrary files through the daemon's whole validation (config's
// own checks plus the catalogue, the user-subnet check and the proxy constructors): no
// input panics, every error has the file and a message, and an accepted file has only
// proxies the proxy package builds and subnets the lists manager keeps.
func FuzzLoadConfigRules(f *testing.F) {
	for _, seed := range []string{
		"config main 'main'\n\toption enabled '1'\n\nconfig proxy 'p'\n\toption server '198.51.100.6'\n\toption port '1080'\n",
		"config service 'telegram'\nconfig service 'wechat'\n",
		"config custom 'c'\n\tlist subnet '0.0.0.0/0'\n\tlist subnet '192.168.1.0/24'\n\tlist subnet '203.0.113.0/24'\n",
		"config proxy 'ss'\n\toption type 'shadowsocks'\n\toption server 'h'\n\toption port '8388'\n\toption cipher '2022-blake3-aes-128-gcm'\n\toption password 'AAECAwQFBgcICQoLDA0ODw=='\n",
		"config proxy 'q'\n\toption server 'h'\n\toption prot '1'\n",
		"config main 'main'\n\toption fail_mode 'block\n",
	} {
		f.Add(seed)
	}
	rules := ConfigRules{}
	f.Fuzz(func(t *testing.T, in string) {
		cfg, _, err := config.ParseWith("f", strings.NewReader(in), rules)
		if err != nil {
			errs, ok := err.(config.Errors)
			if !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			for _, e := range errs {
				if e.File != "f" || e.Msg == "" {
					t.Fatalf("incomplete error %#v", e)
				}
			}
			return
		}
		for _, p := range cfg.Proxies {
			if err := rules.CheckProxy(p); err != nil {
				t.Fatalf("accepted proxy %s that the proxy package refuses: %v", p.Name, err)
			}
		}
		for _, c := range cfg.Customs {
			for _, s := range c.Subnets {
				if err := rules.CheckSubnet(s); err != nil {
					t.Fatalf("accepted subnet %s that the lists manager drops: %v", s, err)
				}
			}
		}
	})
}
