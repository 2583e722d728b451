package control

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tgtun/tgtun/daemon/subs"
)

func TestPrintSubscriptions(t *testing.T) {
	st := Status{Subscriptions: []subs.Status{{
		Name: "prov", URL: "https://panel.example.org/<redacted>", Enabled: true, Origin: subs.OriginDownload,
		Members: []subs.MemberStatus{{Name: "nl_amsterdam", Label: "🇳🇱 NL Amsterdam"}, {Name: "prov_2"}},
		Skipped: 1, SkipReasons: []string{"link 3: vmess link: not supported"},
		UpdatedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), NextRefresh: time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC),
		LastError: "HTTP 500 Internal Server Error",
		Userinfo:  &subs.Userinfo{Upload: 1 << 30, Download: 1 << 29, Total: 10 << 30, Expire: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		Announce:  "Renew soon",
	}}}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Print(&out, "status", raw); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SUBSCRIPTION", "prov  ", "2  ", "1.5 GiB of 10.0 GiB", "2027-01-01", "2026-12-01T10:00:00Z (download)",
		"HTTP 500 Internal Server Error", "proxies of prov (https://panel.example.org/<redacted>): nl_amsterdam (🇳🇱 NL Amsterdam), prov_2",
		"skipped in prov: link 3: vmess link: not supported", "announcement of prov: Renew soon"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	res, _ := json.Marshal(map[string]any{"subscriptions": st.Subscriptions, "error": "subscription prov: HTTP 500"})
	if err := Print(&out, "update_subscriptions", res); err == nil || !strings.Contains(out.String(), "nl_amsterdam") {
		t.Fatalf("update_subscriptions: %v\n%s", err, out.String())
	}
}

func TestSubscriptionHint(t *testing.T) {
	for msg, want := range map[string]string{
		"the panel's device limit is reached (x-hwid-max-devices-reached): remove a device": "refuses this router as a device",
		"the body is an Xray/sing-box JSON configuration, not share links":                  "set option user_agent",
		"HTTP 404 Not Found": "expired or been revoked",
		"none of its 3 links is usable (link 1: vmess link: not supported)": "holds no link tgtun can use",
		"no answer within 1m0s (context deadline exceeded)":                 "could not be reached",
	} {
		if got := subscriptionHint(subs.Status{LastError: msg, Members: []subs.MemberStatus{{Name: "x"}}}); !strings.Contains(got, want) {
			t.Errorf("hint for %q = %q, want %q", msg, got, want)
		}
	}
	if got := subscriptionHint(subs.Status{}); !strings.Contains(got, "tgtun subscription update") {
		t.Errorf("hint without members: %q", got)
	}
}
