package main

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tgtun/tgtun/bench/internal/hev"
	"github.com/tgtun/tgtun/bench/mips/wire"
)

// Inside the emulated router: where the bench disk is mounted, the proxy host's address.
const (
	benchRoot = "/bench"
	proxyV4   = "198.51.100.6"
	dantePort = 1080
	sni       = "www.example.com"
	vlessUUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
	shortID   = "0123abcd"
	sitePort  = 8443
)

// bootPlan is a plan with the files its bench disk carries besides the guest.
type bootPlan struct {
	*wire.Plan
	files map[string][]byte // path under /bench → content
	bins  map[string]string // path under /bench → host file
}

func newBoot(o options, kind string, round int) *bootPlan {
	b := &bootPlan{
		Plan: &wire.Plan{Round: round, Kind: kind, Seconds: o.seconds, Conns: o.conns, Flows: o.flows, IdleSeconds: o.idle},
		files: map[string][]byte{
			"conf/danted.conf": []byte(danteConf),
		},
		bins: map[string]string{},
	}
	b.Servers = append(b.Servers, wire.Server{Name: "dante", Argv: []string{"danted", "-f", benchRoot + "/conf/danted.conf"},
		Wait: fmt.Sprintf("%s:%d", proxyV4, dantePort)})
	return b
}

const danteConf = `logoutput: stderr
internal: 198.51.100.6 port = 1080
external: 198.51.100.6
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: root
client pass {
	from: 0/0 to: 0/0
}
socks pass {
	from: 0/0 to: 0/0
	command: bind connect udpassociate bindreply udpreply
	udp.portrange: 1024-65535
}
`

// baseRun is the baseline: the LAN client speaks SOCKS5 to dante itself, no relay.
func baseRun(group string, full bool) wire.Run {
	return wire.Run{Name: "base", Group: group, Socks: fmt.Sprintf("%s:%d", proxyV4, dantePort),
		Flows: full, Latency: full, Throughput: true}
}

// tgtunRun runs variant v with the proxy section proxyConf (label for file names).
func (b *bootPlan) tgtunRun(v variant, group, proxyConf string, env ...string) wire.Run {
	name := v.Name
	bin := "bin/tgtun-" + v.Name
	b.bins[bin] = v.Path
	conf := fmt.Sprintf("conf/%s-%s.conf", name, group)
	b.files[conf] = []byte(tgtunConf + proxyConf)
	argv := []string{"env", "TGTUN_ALLOW_DOCUMENTATION_RANGES=1"}
	argv = append(argv, v.Env...)
	argv = append(argv, env...)
	argv = append(argv, benchRoot+"/"+bin, "run", "-c", benchRoot+"/"+conf,
		"--socket", "/tmp/"+name+"-"+group+".sock", "--list-cache", "/tmp/"+name+"-"+group+"-lists")
	return wire.Run{Name: name, Group: group, Argv: argv}
}

// tgtunConf is tgtun's configuration in the emulated router, as the e2e tests and
// `make bench` write it: the LAN on lan0, the messenger's subnet as a custom target.
const tgtunConf = `config main 'main'
	option enabled '1'
	list lan_iface 'lan0'
	option health_target '203.0.113.10:7'
	option update_interval '0'
	option log_level 'warn'

config service 'telegram'
	option enabled '0'

config custom 'messenger'
	list subnet '203.0.113.0/24'

`

var danteProxy = fmt.Sprintf("config proxy 'dante'\n\toption server '%s'\n\toption port '%d'\n\toption priority '10'\n", proxyV4, dantePort)

// hevConf: hev-socks5-tunnel's TUN (its own address in the LAN's documentation range)
// and dante.
var hevConf = hev.Conf("hevtun", 8500, netip.MustParseAddr("192.0.2.250"), netip.AddrPortFrom(netip.MustParseAddr(proxyV4), dantePort))

func socksPlan(o options, tools toolFiles, round int) *bootPlan {
	b := newBoot(o, "socks", round)
	b.bins["bin/hev"] = tools.hev
	b.files["conf/hev.yml"] = []byte(hevConf)
	runs := []wire.Run{baseRun("socks", true)}
	for _, v := range o.variants {
		r := b.tgtunRun(v, "socks", danteProxy)
		r.Idle, r.Flows, r.Latency, r.Throughput = true, true, true, true
		runs = append(runs, r)
	}
	runs = append(runs, wire.Run{Name: "hev", Group: "socks", Argv: []string{benchRoot + "/bin/hev", benchRoot + "/conf/hev.yml"},
		Tun: "hevtun", Idle: true, Flows: true, Latency: true, Throughput: true})
	// The order turns from round to round, so that drift over a boot weighs on all alike.
	k := (round - 1) % len(runs)
	b.Runs = append(runs[k:], runs[:k]...)
	return b
}

// protocol is one encrypted protocol: its Xray server inbound and the three clients'
// settings for it.
type protocol struct {
	name   string
	port   int
	server func(k *keys) map[string]any // Xray inbound
	tgtun  func(k *keys) string         // tgtun proxy section
	sbox   func(k *keys) map[string]any // sing-box outbound
	xray   func(k *keys) map[string]any // Xray outbound
	hello  bool                         // the TLS site counts its handshakes (REALITY)
}

type keys struct {
	realityPriv, realityPub string
	ss128, ss256            string // base64 keys
	trojanPass              string
	certPEM, keyPEM         []byte
	certSHA256              string
}

func newKeys() (*keys, error) {
	k := &keys{trojanPass: "bench-mips-trojan"}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	enc := base64.RawURLEncoding
	k.realityPriv, k.realityPub = enc.EncodeToString(x.Bytes()), enc.EncodeToString(x.PublicKey().Bytes())
	for _, p := range []struct {
		dst *string
		n   int
	}{{&k.ss128, 16}, {&k.ss256, 32}} {
		b := make([]byte, p.n)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		*p.dst = base64.StdEncoding.EncodeToString(b)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: sni}, DNSNames: []string{sni},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	k.certSHA256 = hex.EncodeToString(sum[:])
	k.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	k.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	return k, nil
}

var allProtocols = []string{"vless-reality", "vless-reality-vision", "trojan", "ss2022-aes128", "ss2022-chacha"}

func protocolByName(name string) *protocol {
	for i := range protocols {
		if protocols[i].name == name {
			return &protocols[i]
		}
	}
	return nil
}

func realityInbound(port int, flow string) func(k *keys) map[string]any {
	return func(k *keys) map[string]any {
		return map[string]any{
			"listen": proxyV4, "port": port, "protocol": "vless", "tag": fmt.Sprintf("in-%d", port),
			"settings": map[string]any{"clients": []any{map[string]any{"id": vlessUUID, "flow": flow}}, "decryption": "none"},
			"streamSettings": map[string]any{"network": "raw", "security": "reality", "realitySettings": map[string]any{
				"target": fmt.Sprintf("127.0.0.1:%d", sitePort), "serverNames": []string{sni},
				"privateKey": k.realityPriv, "shortIds": []string{shortID}}},
		}
	}
}

func realityTgtun(port int, flow string) func(k *keys) string {
	return func(k *keys) string {
		s := fmt.Sprintf("config proxy 'p'\n\toption type 'vless'\n\toption server '%s'\n\toption port '%d'\n\toption uuid '%s'\n"+
			"\toption security 'reality'\n\toption sni '%s'\n\toption public_key '%s'\n\toption short_id '%s'\n",
			proxyV4, port, vlessUUID, sni, k.realityPub, shortID)
		if flow != "" {
			s += "\toption flow '" + flow + "'\n"
		}
		return s
	}
}

func realitySingBox(port int, flow string) func(k *keys) map[string]any {
	return func(k *keys) map[string]any {
		return map[string]any{"type": "vless", "tag": "proxy", "server": proxyV4, "server_port": port, "uuid": vlessUUID, "flow": flow,
			"tls": map[string]any{"enabled": true, "server_name": sni,
				"utls":    map[string]any{"enabled": true, "fingerprint": "chrome"},
				"reality": map[string]any{"enabled": true, "public_key": k.realityPub, "short_id": shortID}}}
	}
}

func realityXray(port int, flow string) func(k *keys) map[string]any {
	return func(k *keys) map[string]any {
		return map[string]any{"protocol": "vless", "tag": "proxy",
			"settings": map[string]any{"vnext": []any{map[string]any{"address": proxyV4, "port": port,
				"users": []any{map[string]any{"id": vlessUUID, "encryption": "none", "flow": flow}}}}},
			"streamSettings": map[string]any{"network": "raw", "security": "reality", "realitySettings": map[string]any{
				"serverName": sni, "fingerprint": "chrome", "publicKey": k.realityPub, "shortId": shortID}}}
	}
}

func ssProtocol(name string, port int, method string, key func(k *keys) string) protocol {
	return protocol{
		name: name, port: port,
		server: func(k *keys) map[string]any {
			return map[string]any{"listen": proxyV4, "port": port, "protocol": "shadowsocks", "tag": name,
				"settings": map[string]any{"method": method, "password": key(k), "network": "tcp,udp"}}
		},
		tgtun: func(k *keys) string {
			return fmt.Sprintf("config proxy 'p'\n\toption type 'shadowsocks'\n\toption server '%s'\n\toption port '%d'\n\toption cipher '%s'\n\toption password '%s'\n",
				proxyV4, port, method, key(k))
		},
		sbox: func(k *keys) map[string]any {
			return map[string]any{"type": "shadowsocks", "tag": "proxy", "server": proxyV4, "server_port": port, "method": method, "password": key(k)}
		},
		xray: func(k *keys) map[string]any {
			return map[string]any{"protocol": "shadowsocks", "tag": "proxy", "settings": map[string]any{"servers": []any{
				map[string]any{"address": proxyV4, "port": port, "method": method, "password": key(k)}}}}
		},
	}
}

var protocols = []protocol{
	{name: "vless-reality", port: 4431, hello: true,
		server: realityInbound(4431, ""), tgtun: realityTgtun(4431, ""), sbox: realitySingBox(4431, ""), xray: realityXray(4431, "")},
	{name: "vless-reality-vision", port: 4432, hello: true,
		server: realityInbound(4432, "xtls-rprx-vision"), tgtun: realityTgtun(4432, "xtls-rprx-vision"),
		sbox: realitySingBox(4432, "xtls-rprx-vision"), xray: realityXray(4432, "xtls-rprx-vision")},
	{name: "trojan", port: 4433,
		server: func(k *keys) map[string]any {
			return map[string]any{"listen": proxyV4, "port": 4433, "protocol": "trojan", "tag": "trojan",
				"settings": map[string]any{"clients": []any{map[string]any{"password": k.trojanPass}}},
				"streamSettings": map[string]any{"network": "raw", "security": "tls", "tlsSettings": map[string]any{
					"certificates": []any{map[string]any{"certificateFile": benchRoot + "/conf/trojan.crt", "keyFile": benchRoot + "/conf/trojan.key"}}}}}
		},
		tgtun: func(k *keys) string {
			// insecure: the test certificate is self-signed (tgtun warns, and that is all).
			return fmt.Sprintf("config proxy 'p'\n\toption type 'trojan'\n\toption server '%s'\n\toption port '4433'\n\toption password '%s'\n\toption sni '%s'\n\toption insecure '1'\n",
				proxyV4, k.trojanPass, sni)
		},
		sbox: func(k *keys) map[string]any {
			return map[string]any{"type": "trojan", "tag": "proxy", "server": proxyV4, "server_port": 4433, "password": k.trojanPass,
				"tls": map[string]any{"enabled": true, "server_name": sni, "insecure": true,
					"utls": map[string]any{"enabled": true, "fingerprint": "chrome"}}}
		},
		xray: func(k *keys) map[string]any {
			return map[string]any{"protocol": "trojan", "tag": "proxy",
				"settings": map[string]any{"servers": []any{map[string]any{"address": proxyV4, "port": 4433, "password": k.trojanPass}}},
				"streamSettings": map[string]any{"network": "raw", "security": "tls", "tlsSettings": map[string]any{
					"serverName": sni, "fingerprint": "chrome", "pinnedPeerCertSha256": k.certSHA256}}}
		},
	},
	ssProtocol("ss2022-aes128", 4434, "2022-blake3-aes-128-gcm", func(k *keys) string { return k.ss128 }),
	ssProtocol("ss2022-chacha", 4435, "2022-blake3-chacha20-poly1305", func(k *keys) string { return k.ss256 }),
}

func mustJSON(v any) []byte {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return raw
}

// encServer adds the Xray server with every protocol's inbound and the REALITY site.
func (b *bootPlan) encServer(o options, tools toolFiles, k *keys, protos []*protocol) {
	var inbounds []any
	for _, p := range protos {
		inbounds = append(inbounds, p.server(k))
	}
	b.bins["bin/xray"] = tools.xray
	b.files["conf/xray-server.json"] = mustJSON(map[string]any{
		"log": map[string]any{"loglevel": "warning"}, "inbounds": inbounds,
		"outbounds": []any{map[string]any{"protocol": "freedom"}}})
	b.files["conf/trojan.crt"], b.files["conf/trojan.key"] = k.certPEM, k.keyPEM
	b.Servers = append(b.Servers, wire.Server{Name: "xray-server", Argv: []string{benchRoot + "/bin/xray", "run", "-c", benchRoot + "/conf/xray-server.json"},
		Wait: fmt.Sprintf("%s:%d", proxyV4, protos[0].port)})
	b.TLSSite = &wire.TLSSite{Addr: fmt.Sprintf("127.0.0.1:%d", sitePort), Cert: benchRoot + "/conf/trojan.crt", Key: benchRoot + "/conf/trojan.key", AES: o.siteAES}
}

func encPlan(o options, tools toolFiles, round int) (*bootPlan, error) {
	k, err := newKeys()
	if err != nil {
		return nil, err
	}
	b := newBoot(o, "enc", round)
	var protos []*protocol
	for _, name := range o.protocols {
		protos = append(protos, protocolByName(name))
	}
	b.encServer(o, tools, k, protos)
	b.bins["bin/sing-box"] = tools.singBox
	runs := []wire.Run{baseRun("enc", false)}
	for i, p := range protos {
		var group []wire.Run
		for _, v := range o.variants {
			group = append(group, b.tgtunRun(v, p.name, p.tgtun(k)))
		}
		sbConf := fmt.Sprintf("conf/sing-box-%s.json", p.name)
		b.files[sbConf] = mustJSON(map[string]any{
			"log": map[string]any{"level": "warn"},
			"inbounds": []any{map[string]any{"type": "tun", "tag": "tun-in", "interface_name": "sbtun",
				"address": []string{"192.0.2.249/30"}, "mtu": 1500, "auto_route": false, "stack": "system"}},
			"outbounds": []any{p.sbox(k)},
			"route":     map[string]any{"final": "proxy"},
		})
		group = append(group, wire.Run{Name: "sing-box", Group: p.name, Tun: "sbtun",
			Argv: []string{benchRoot + "/bin/sing-box", "run", "--disable-color", "-c", benchRoot + "/" + sbConf}})
		xConf := fmt.Sprintf("conf/xray-%s.json", p.name)
		b.files[xConf] = mustJSON(map[string]any{
			"log":       map[string]any{"loglevel": "warning"},
			"inbounds":  []any{map[string]any{"port": 0, "protocol": "tun", "settings": map[string]any{"name": "xtun", "MTU": 1500}}},
			"outbounds": []any{p.xray(k)},
		})
		group = append(group, wire.Run{Name: "xray", Group: p.name, Tun: "xtun", TunAddr: "192.0.2.245/30",
			Argv: []string{benchRoot + "/bin/xray", "run", "-c", benchRoot + "/" + xConf}})
		for j := range group {
			group[j].Idle, group[j].Throughput = true, true
		}
		// Turn the order within each protocol from round to round.
		kk := (round - 1 + i) % len(group)
		runs = append(runs, append(group[kk:], group[:kk]...)...)
	}
	b.Runs = runs
	return b, nil
}

// pprofPlan profiles tgtun of this checkout (built with -tags tgtun_pprof): idle, upload
// and download through dante, and through VLESS+REALITY when that protocol is measured.
func pprofPlan(o options, tools toolFiles) (*bootPlan, error) {
	b := newBoot(o, "pprof", 1)
	v := variant{Name: "tgtun-pprof", Path: tools.pprofTgtun}
	phases := []string{"idle", "up", "down"}
	add := func(r wire.Run) {
		r.Idle, r.Throughput, r.Profile = true, true, phases
		b.Runs = append(b.Runs, r)
	}
	add(b.tgtunRun(v, "socks", danteProxy, "TGTUN_PPROF=/tmp/logs/tgtun-pprof.pprof"))
	if p := protocolByName("vless-reality"); containsString(o.protocols, "vless-reality") && tools.xray != "" {
		k, err := newKeys()
		if err != nil {
			return nil, err
		}
		b.encServer(o, tools, k, []*protocol{p})
		vl := variant{Name: "tgtun-pprof-vless", Path: tools.pprofTgtun}
		add(b.tgtunRun(vl, p.name, p.tgtun(k), "TGTUN_PPROF=/tmp/logs/tgtun-pprof-vless.pprof"))
	}
	return b, nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// benchDisk writes the boot's bench disk: an ext2 image (mke2fs -d: no mount) with the
// guest, run.sh, plan.json, the programs and their configurations.
func benchDisk(tools toolFiles, b *bootPlan, dir string) (string, error) {
	tree := filepath.Join(dir, "bench")
	if err := os.RemoveAll(tree); err != nil {
		return "", err
	}
	defer os.RemoveAll(tree)
	files := map[string][]byte{"plan.json": mustJSON(b.Plan)}
	for k, v := range b.files {
		files[k] = v
	}
	runSh, err := os.ReadFile("bench/mips/run.sh")
	if err != nil {
		return "", err
	}
	files["run.sh"] = runSh
	for name, content := range files {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return "", err
		}
	}
	bins := map[string]string{"guest": tools.guest}
	for k, v := range b.bins {
		bins[k] = v
	}
	var size int64 = 16 << 20
	for dst, src := range bins {
		p := filepath.Join(tree, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := copyFile(src, p, 0o755); err != nil {
			return "", err
		}
		if st, err := os.Stat(p); err == nil {
			size += st.Size() + 1<<20
		}
	}
	img := filepath.Join(dir, "bench.img")
	os.Remove(img)
	out, err := exec.Command("mke2fs", "-q", "-t", "ext2", "-L", "tgtun-bench", "-d", tree, img, fmt.Sprintf("%dk", size*5/4/1024)).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("mke2fs bench disk: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return img, nil
}
