package subs

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tgtun/tgtun/daemon/config"
)

const (
	linkNL    = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@198.51.100.7:443?security=tls&sni=nl.example.org#%F0%9F%87%B3%F0%9F%87%B1%20NL%20Amsterdam"
	linkDE    = "trojan://secret@198.51.100.8:443?security=tls#DE Frankfurt"
	linkRU    = "socks5://198.51.100.9:1080#Russia"
	linkNoTag = "socks5://198.51.100.10:1080"
	linkCyr   = "socks5://198.51.100.11:1080#%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0"
	linkVMess = "vmess://eyJ2IjoiMiJ9"
	linkBad   = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@198.51.100.12:443?security=reality&pbk=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8#no-sni"
)

func TestBuild(t *testing.T) {
	sub := config.Subscription{Name: "prov", Enabled: true, Priority: 30}
	all := []string{linkNL, linkDE, linkRU, linkNoTag, linkCyr, linkVMess, linkBad}
	tests := []struct {
		name     string
		sub      func(s *config.Subscription)
		taken    []string
		links    []string
		want     string // name=label|… of the members
		skipped  []string
		filtered int
	}{
		{name: "every kind", links: all,
			want:    "prov_nl_amsterdam=🇳🇱 NL Amsterdam|prov_de_frankfurt=DE Frankfurt|prov_russia=Russia|prov_4=|prov_5=Москва",
			skipped: []string{"link 6: vmess link: not supported", "link 7: sni is missing (REALITY needs"}},
		{name: "names taken by sections and each other", links: []string{linkRU, linkRU, linkNoTag}, taken: []string{"prov_russia", "prov_3"},
			want: "prov_russia_2=Russia|prov_russia_3=Russia|prov_3_2="},
		{name: "include", links: all, sub: func(s *config.Subscription) { s.Include = []string{"nl", "frankfurt"} },
			want: "prov_nl_amsterdam=🇳🇱 NL Amsterdam|prov_de_frankfurt=DE Frankfurt", filtered: 5},
		{name: "exclude", links: all[:5], sub: func(s *config.Subscription) { s.Exclude = []string{"RUSSIA", "москва"} },
			want: "prov_nl_amsterdam=🇳🇱 NL Amsterdam|prov_de_frankfurt=DE Frankfurt|prov_3=", filtered: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sub
			if tt.sub != nil {
				tt.sub(&s)
			}
			taken := map[string]bool{}
			for _, n := range tt.taken {
				taken[n] = true
			}
			res := Build(s, tt.links, taken, nil)
			var got []string
			for _, m := range res.Members {
				got = append(got, m.Name+"="+m.Label)
				if m.Proxy.Name != m.Name || m.Proxy.Priority != 30 || m.Sub != "prov" || !taken[m.Name] {
					t.Errorf("member %+v", m)
				}
			}
			if g := strings.Join(got, "|"); g != tt.want {
				t.Errorf("members\n got %s\nwant %s", g, tt.want)
			}
			if len(res.Skipped) != len(tt.skipped) {
				t.Fatalf("skipped %v, want %v", res.Skipped, tt.skipped)
			}
			for i, want := range tt.skipped {
				if !strings.Contains(res.Skipped[i].String(), want) {
					t.Errorf("skip %d: %q does not contain %q", i, res.Skipped[i], want)
				}
			}
			if res.Filtered != tt.filtered {
				t.Errorf("filtered %d, want %d", res.Filtered, tt.filtered)
			}
		})
	}
}

func TestBuildWithRulesAndLimits(t *testing.T) {
	res := Build(config.Subscription{Name: "p", Priority: 1}, []string{linkNL, linkDE}, map[string]bool{}, rejectServer("198.51.100.8"))
	if len(res.Members) != 1 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Reason, "the daemon cannot use this proxy: no") {
		t.Fatalf("rules: %+v", res)
	}
	if strings.Contains(res.Skipped[0].Reason, "secret") {
		t.Fatalf("a skip reason shows the password: %q", res.Skipped[0].Reason)
	}
	many := make([]string, MaxMembers+3)
	for i := range many {
		many[i] = linkNoTag
	}
	res = Build(config.Subscription{Name: "p"}, many, map[string]bool{}, nil)
	if len(res.Members) != MaxMembers || len(res.Skipped) != 3 || !strings.Contains(res.Skipped[0].Reason, "more than") {
		t.Fatalf("%d members, skipped %v", len(res.Members), res.Skipped[:min(len(res.Skipped), 3)])
	}
}

// rejectServer is config.Rules whose CheckProxy refuses one server, as the proxy
// package refuses what it cannot build.
type rejectServer string

func (rejectServer) Services() []string             { return nil }
func (rejectServer) CheckSubnet(netip.Prefix) error { return nil }
func (r rejectServer) CheckProxy(p config.Proxy) error {
	if p.Server == string(r) {
		return errors.New("no")
	}
	return nil
}

// FuzzBuild: whatever a provider sends, members have unique section names and a
// checked proxy each.
func FuzzBuild(f *testing.F) {
	f.Add(linkNL + "\n" + linkRU + "\n" + linkRU + "\n" + linkVMess)
	f.Add("socks5://h:1#main\nhttp://u:p@h:2#%00x\nss://YWVzLTEyOC1nY206dGVzdA==@h:3#main")
	f.Fuzz(func(t *testing.T, body string) {
		b, err := DecodeBody([]byte(body))
		if err != nil {
			return
		}
		taken := map[string]bool{"main": true}
		res := Build(config.Subscription{Name: "s", Priority: 10}, b.Links, taken, nil)
		seen := map[string]bool{"main": true}
		for _, m := range res.Members {
			if seen[m.Name] || m.Name == "" || m.Proxy.Server == "" || m.Proxy.Port == 0 {
				t.Fatalf("member %+v (seen %v)", m, seen)
			}
			seen[m.Name] = true
		}
		if len(res.Members)+len(res.Skipped) != len(b.Links) {
			t.Fatalf("%d members and %d skipped of %d links", len(res.Members), len(res.Skipped), len(b.Links))
		}
	})
}

// TestBuildTransportsAndPins: a subscription's links over transports and with pinned
// certificates (pcs) become members with those options, checked as a section is; a bad
// pin or an XHTTP extra tgtun refuses skips the link with the reason.
func TestBuildTransportsAndPins(t *testing.T) {
	const pin = "5870bf1355c3b4ef09ad3daf8e1efe58cc01b4ec8141febe6f408e40339f17b8"
	links := []string{
		"vless://b831381d-6324-4d53-ad4f-8cda48b30811@198.51.100.7:443?type=ws&path=%2Fws%3Fed%3D2048&host=cdn.example.org&security=tls&allowInsecure=1&pcs=" + pin + "#ws",
		"trojan://pw@198.51.100.8:443?type=grpc&serviceName=svc&mode=multi&security=tls#grpc",
		"vless://b831381d-6324-4d53-ad4f-8cda48b30811@198.51.100.9:443?type=xhttp&path=%2Fx&mode=packet-up&security=reality&sni=www.example.com&pbk=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8#xhttp",
		"trojan://pw@198.51.100.10:443?type=httpupgrade&path=%2Fhu&pcs=abcd#badpin",
		"vless://b831381d-6324-4d53-ad4f-8cda48b30811@198.51.100.11:443?type=xhttp&security=tls&extra=%7B%22downloadSettings%22%3A%7B%7D%7D#split",
	}
	res := Build(config.Subscription{Name: "p", Priority: 5}, links, map[string]bool{}, nil)
	if len(res.Members) != 3 || len(res.Skipped) != 2 {
		t.Fatalf("members %d, skipped %v", len(res.Members), res.Skipped)
	}
	ws, grpc, xh := res.Members[0].Proxy, res.Members[1].Proxy, res.Members[2].Proxy
	if ws.Transport != "ws" || ws.Path != "/ws" || ws.Host != "cdn.example.org" || ws.EarlyData != 2048 ||
		len(ws.PinnedSHA256) != 1 || ws.PinnedSHA256[0] != pin || ws.Insecure {
		t.Errorf("ws member: %+v transport %q path %q host %q ed %d pins %v insecure %v", ws, ws.Transport, ws.Path, ws.Host, ws.EarlyData, ws.PinnedSHA256, ws.Insecure)
	}
	if grpc.Transport != "grpc" || grpc.ServiceName != "svc" || grpc.Mode != "multi" {
		t.Errorf("grpc member: transport %q service %q mode %q", grpc.Transport, grpc.ServiceName, grpc.Mode)
	}
	if xh.Transport != "xhttp" || xh.Path != "/x" || xh.Mode != "packet-up" || xh.Security != config.SecurityReality {
		t.Errorf("xhttp member: transport %q path %q mode %q security %q", xh.Transport, xh.Path, xh.Mode, xh.Security)
	}
	for i, want := range []string{"link 4: pinned_sha256 'abcd' is not a SHA-256", "link 5: vless link: extra: downloadSettings"} {
		if !strings.Contains(res.Skipped[i].String(), want) {
			t.Errorf("skip %d: %q does not contain %q", i, res.Skipped[i], want)
		}
	}
}
