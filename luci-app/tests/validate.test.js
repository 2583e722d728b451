'use strict';
// The settings form must judge values as `tgtun config check` does, in the same words.
// Each case is one section of /etc/config/tgtun: the daemon (built from this checkout)
// checks it as a file, the form's checks (from settings.js, run under the LuCI stand-in)
// check the same values, and the two lists of errors must be equal.
// The views load under the stand-in (harness/luci-stub.js) here: this test calls the
// checks under node for ~140 values, which LuCI's real runtime (it needs a browser DOM)
// cannot; every page, form and save test runs on the real runtime (runtime.test.js).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { appDir } = require('./lib/i18n');
const { loadView } = require('./lib/load-view');

const checks = loadView('tgtun/settings').checks;
const repo = path.resolve(appDir, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tgtun-luci-validate-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let tgtun = process.env.TGTUN_TEST_BIN; // built by run.sh
test.before(() => {
	if (tgtun) return;
	const go = process.env.GO || 'go';
	tgtun = path.join(tmp, 'tgtun');
	const r = spawnSync(go, ['build', '-o', tgtun, './daemon'], { cwd: repo, encoding: 'utf8', timeout: 600000 });
	if (r.error || r.status !== 0)
		throw new Error(`cannot build the daemon with '${go} build ./daemon' in ${repo}: ${r.error || r.stderr}`);
});

const uciQuote = (v) => `'${String(v).replace(/'/g, "'\\''")}'`;

function sectionText(kind, name, opts) {
	let s = `config ${kind} '${name}'\n`;
	for (const [k, v] of Object.entries(opts)) {
		for (const item of Array.isArray(v) ? v : [v]) s += `\t${Array.isArray(v) ? 'list' : 'option'} ${k} ${uciQuote(item)}\n`;
	}
	return s;
}

// The daemon's errors for a file: the messages after "file:line: section: ".
let seq = 0;
function daemonErrors(text) {
	const file = path.join(tmp, `case${++seq}.cfg`);
	fs.writeFileSync(file, text);
	const r = spawnSync(tgtun, ['config', 'check', '-c', file], { encoding: 'utf8', timeout: 30000 });
	assert.ok(r.status === 0 || r.status === 1, `tgtun config check exited ${r.status}: ${r.stderr}`);
	const prefix = /^[^:]+:\d+: (?:[a-z_]+ '[^']*'|@[a-z_]+\[\d+\]): /;
	const errs = r.stderr.split('\n').filter((l) => l && !l.startsWith('warning: ') && !/: \d+ error\(s\)$/.test(l));
	for (const e of errs) assert.match(e, prefix, 'unexpected line from tgtun config check');
	assert.equal(r.status, errs.length ? 1 : 0);
	return errs.map((e) => e.replace(prefix, '')).sort();
}

// What the form says about the options of a section, as settings.js wires its checks.
const opt = (o, k) => (o[k] == null ? '' : String(o[k]));
function formMain(o) {
	const ipv6 = opt(o, 'ipv6') !== '0';
	return [
		opt(o, 'tun_name') && checks.tun_name(o.tun_name),
		opt(o, 'tun_mtu') && checks.tun_mtu(o.tun_mtu, ipv6),
		o.lan_iface && checks.lan_iface(o.lan_iface),
		opt(o, 'fwmark') && checks.fwmark(o.fwmark, opt(o, 'bypass_mark')),
		opt(o, 'bypass_mark') && checks.bypass_mark(o.bypass_mark, opt(o, 'fwmark')),
		opt(o, 'route_table') && checks.route_table(o.route_table),
		opt(o, 'rule_priority') && checks.rule_priority(o.rule_priority),
		opt(o, 'update_interval') && checks.update_interval(o.update_interval),
		opt(o, 'health_target') && checks.health_target(o.health_target),
		opt(o, 'health_interval') && checks.health_interval(o.health_interval),
		opt(o, 'memory_limit') && checks.memory_limit(o.memory_limit),
	].filter(Boolean).sort();
}
// The transport options a transport uses (the form shows only those).
const TRANSPORT_USES = {
	path: ['ws', 'httpupgrade', 'xhttp'], host: ['ws', 'httpupgrade', 'grpc', 'xhttp'], service_name: ['grpc'],
	mode: ['grpc', 'xhttp'], early_data: ['ws', 'httpupgrade'], padding_bytes: ['xhttp'], extra: ['xhttp'],
};
function formProxy(o) {
	const type = opt(o, 'type') || 'socks5';
	const cred = checks.credentials(type, opt(o, 'server'), opt(o, 'cipher'), type === 'shadowsocks' ? '' : opt(o, 'username'), opt(o, 'password'));
	const errs = [
		opt(o, 'server') && checks.server(o.server),
		checks.port(opt(o, 'port'), opt(o, 'server')),
		cred.username, cred.password,
		opt(o, 'priority') && checks.priority(o.priority),
		...(o.pinned_sha256 || []).map(checks.pinned_sha256),
		opt(o, 'ca_file') && checks.ca_file(o.ca_file),
		checks.cert_options(type, opt(o, 'security') || 'tls', opt(o, 'insecure') === '1',
			(o.pinned_sha256 || []).length > 0 || opt(o, 'ca_file') !== ''),
	];
	if (type === 'vless' || type === 'trojan') {
		const tr = opt(o, 'transport') || 'tcp';
		errs.push(checks.transport(tr, type === 'vless' ? opt(o, 'flow') : ''));
		for (const [name, by] of Object.entries(TRANSPORT_USES)) {
			if (opt(o, name) && by.includes(tr))
				errs.push(name === 'mode' ? checks.mode(o.mode, tr) : checks[name](o[name]));
		}
	}
	return errs.filter(Boolean).sort();
}
function formSubscription(o) {
	return [
		checks.sub_url(opt(o, 'url')),
		opt(o, 'interval') && checks.sub_interval(o.interval),
		opt(o, 'priority') && checks.priority(o.priority),
		opt(o, 'user_agent') && checks.user_agent(o.user_agent),
		opt(o, 'hwid') && checks.hwid(o.hwid),
		...(o.include || []).map((v) => checks.name_filter('include', v)),
		...(o.exclude || []).map((v) => checks.name_filter('exclude', v)),
	].filter(Boolean).sort();
}
function formCustom(o) {
	return [...(o.subnet || []).map(checks.subnet), ...(o.url || []).map(checks.url)].filter(Boolean).sort();
}

const mainCases = [
	{ tun_name: 'tgtun0' }, { tun_name: 'averyveryverylongname' }, { tun_name: 'a/b' }, { tun_name: 'a b' },
	{ tun_name: '..' }, { tun_name: 'tün' },
	{ tun_mtu: '1500' }, { tun_mtu: '1280' }, { tun_mtu: '70' }, { tun_mtu: '9001' }, { tun_mtu: 'abc' },
	{ tun_mtu: '+1500' }, { tun_mtu: '700', ipv6: '0' }, { tun_mtu: '500', ipv6: '0' },
	{ lan_iface: ['br-lan', 'br-guest'] }, { lan_iface: ['br-lan', 'bad/name'] },
	{ fwmark: '0x100000' }, { fwmark: '0x100000/0x300000' }, { fwmark: '0' }, { fwmark: '0x1/zz' },
	{ fwmark: '0x3/0x1' }, { fwmark: 'zz' }, { fwmark: '4294967296' }, { fwmark: '0X10' }, { fwmark: '16' },
	{ fwmark: '0x' }, { fwmark: '0x100000/0x300000', bypass_mark: '0x400000' },
	{ bypass_mark: '0x200000' }, { bypass_mark: '0' }, { bypass_mark: '0x100000' }, { bypass_mark: 'x' },
	{ bypass_mark: '0x300000', fwmark: '0x100000' }, { bypass_mark: '0x100000', fwmark: '0x1/0x1' },
	{ bypass_mark: '0x1', fwmark: 'bad' },
	{ route_table: '7470' }, { route_table: '254' }, { route_table: '0' }, { route_table: '4294967295' },
	{ route_table: '4294967296' }, { route_table: 'abc' },
	{ rule_priority: '1' }, { rule_priority: '2' }, { rule_priority: '32765' }, { rule_priority: '32766' },
	{ update_interval: '24h' }, { update_interval: '0' }, { update_interval: '5m' }, { update_interval: '10m' },
	{ update_interval: '7d' }, { update_interval: '9000h' }, { update_interval: '-1h' }, { update_interval: '1.5h' },
	{ update_interval: '3600' }, { update_interval: 'abc' }, { update_interval: '8761h' }, { update_interval: '1y' },
	{ update_interval: '1h30m' }, { update_interval: '.5h' }, { update_interval: '600000ms' },
	{ health_target: '149.154.167.51:443' }, { health_target: '[2001:db8::1]:443' }, { health_target: '149.154.167.51' },
	{ health_target: '1.2.3.4:0' }, { health_target: '0.0.0.0:443' }, { health_target: '[fe80::1%eth0]:443' },
	{ health_target: '2001:db8::1:443' }, { health_target: '[1.2.3.4]:80' }, { health_target: '01.2.3.4:80' },
	{ health_target: '[::ffff:1.2.3.4]:443' }, { health_target: '1.2.3.4:65536' }, { health_target: 'host:443' },
	{ health_interval: '10s' }, { health_interval: '0' }, { health_interval: '2h' }, { health_interval: '500ms' },
	{ health_interval: '1h' },
	{ memory_limit: '32M' }, { memory_limit: '0' }, { memory_limit: 'off' }, { memory_limit: '1G' },
	{ memory_limit: '12X' }, { memory_limit: 'M' }, { memory_limit: '64MiB' }, { memory_limit: '9999999999999G' },
];

const proxyCases = [
	{ server: '198.51.100.6', port: '1080' }, { server: 'proxy.example.org', port: '1080' },
	{ server: '198.51.100.6:1080', port: '1080' }, { server: '[2001:db8::1]', port: '1080' },
	{ server: '2001:db8::1', port: '1080' }, { server: '0.0.0.0', port: '1080' }, { server: '-bad-.org', port: '1' },
	{ server: 'a..b', port: '1' }, { server: '[1.2.3.4]', port: '1' }, { server: 'exa mple', port: '1' },
	{ server: '198.51.100.6' }, { server: '198.51.100.6', port: '0' }, { server: '198.51.100.6', port: '70000' },
	{ server: '198.51.100.6', port: 'abc' }, { port: '70000' },
	{ server: '198.51.100.6', port: '1', priority: '-1' }, { server: '198.51.100.6', port: '1', priority: '1001' },
	{ server: '198.51.100.6', port: '1', priority: '10' },
	{ server: '198.51.100.6', port: '1', username: 'u' }, { server: '198.51.100.6', port: '1', password: 'p' },
	{ server: '198.51.100.6', port: '1', username: 'x'.repeat(256), password: 'p' },
	{ server: '198.51.100.6', port: '1', username: 'ü'.repeat(128), password: 'p' },
	{ server: '198.51.100.6', port: '1', username: 'u', password: 'a\tb' },
	{ type: 'http', server: '198.51.100.6', port: '1', username: 'a:b', password: 'p' },
	{ type: 'http', server: '198.51.100.6', port: '1', username: 'x'.repeat(300), password: 'p' },
	{ type: 'http', server: '198.51.100.6', port: '1', username: 'x'.repeat(1025), password: 'p' },
	{ type: 'shadowsocks', server: '198.51.100.6', port: '8388', cipher: 'aes-256-gcm' },
	{ type: 'shadowsocks', server: '198.51.100.6', port: '8388', cipher: 'aes-256-gcm', password: 'pw' },
	{ type: 'shadowsocks', server: '198.51.100.6', port: '8388', cipher: '2022-blake3-aes-128-gcm', password: 'notbase64' },
	{ type: 'shadowsocks', server: '198.51.100.6', port: '8388', cipher: '2022-blake3-aes-128-gcm', password: 'AAAAAAAAAAAAAAAAAAAAAA==' },
	{ type: 'shadowsocks', server: '198.51.100.6', port: '8388', cipher: '2022-blake3-aes-256-gcm', password: 'AAAAAAAAAAAAAAAAAAAAAA==' },
	{ type: 'shadowsocks', server: '198.51.100.6', port: '8388', cipher: '2022-blake3-aes-256-gcm',
		password: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' },
	{ type: 'shadowsocks', server: '198.51.100.6', port: '8388', cipher: '2022-blake3-aes-128-gcm', password: 'AAAAAAAAAAAAAAAAAAAAAA' },
	// Certificates of TLS proxies: pinned_sha256 (pcs) and ca_file.
	{ type: 'vless', server: '198.51.100.6', port: '443', uuid: 'u', pinned_sha256: ['ab'.repeat(32)] },
	{ type: 'vless', server: '198.51.100.6', port: '443', uuid: 'u', pinned_sha256: ['AB:'.repeat(31) + 'AB', 'zz'] },
	{ type: 'vless', server: '198.51.100.6', port: '443', uuid: 'u', pinned_sha256: ['ab'.repeat(31)] },
	{ type: 'vless', server: '198.51.100.6', port: '443', uuid: 'u', ca_file: '/etc/ssl/certs/ca-certificates.crt' },
	{ type: 'vless', server: '198.51.100.6', port: '443', uuid: 'u', ca_file: 'ca.pem' },
	{ type: 'trojan', server: '198.51.100.6', port: '443', password: 'p', ca_file: '/etc/ssl/ca.pem', insecure: '1' },
	{ type: 'trojan', server: '198.51.100.6', port: '443', password: 'p', pinned_sha256: ['ab'.repeat(32)], insecure: '0' },
	{ type: 'vless', server: '198.51.100.6', port: '443', uuid: 'u', security: 'reality', sni: 'www.example.com',
		public_key: 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8', pinned_sha256: ['ab'.repeat(32)] },
];

// vless/trojan with transports: the form's checks and config check (with the daemon's
// own rules: what the transport refuses about extra's fields) agree.
const vlessBase = { type: 'vless', server: '198.51.100.6', port: '443', uuid: 'b831381d-6324-4d53-ad4f-8cda48b30811' };
const transportCases = [
	{ ...vlessBase, transport: 'ws', path: '/ws?x=1', host: 'cdn.example.org', early_data: '2048' },
	{ ...vlessBase, transport: 'kcp' }, { ...vlessBase, transport: 'ws', path: '/a b' }, { ...vlessBase, transport: 'ws', path: '/a#b' },
	{ ...vlessBase, transport: 'ws', host: 'a/b' }, { ...vlessBase, transport: 'ws', host: 'cdn.example.org:8443' },
	{ ...vlessBase, transport: 'ws', host: 'cdn.example.org:0' }, { ...vlessBase, transport: 'ws', host: ':80' },
	{ ...vlessBase, transport: 'ws', early_data: '9000' }, { ...vlessBase, transport: 'httpupgrade', early_data: 'x' },
	{ ...vlessBase, transport: 'grpc', service_name: 'svc.Tun', mode: 'multi' }, { ...vlessBase, transport: 'grpc', service_name: 'a b' },
	{ ...vlessBase, transport: 'grpc', mode: 'packet-up' }, { ...vlessBase, transport: 'xhttp', mode: 'gun' },
	{ ...vlessBase, transport: 'xhttp', mode: 'stream-one', padding_bytes: '100-1000', extra: '{"xmux":{"maxConcurrency":4},"noSSEHeader":true}' },
	{ ...vlessBase, transport: 'xhttp', padding_bytes: '0-10' }, { ...vlessBase, transport: 'xhttp', padding_bytes: '10-5' },
	{ ...vlessBase, transport: 'xhttp', padding_bytes: '+5' }, { ...vlessBase, transport: 'xhttp', extra: '[1,2]' },
	{ ...vlessBase, transport: 'xhttp', extra: 'not json' }, { ...vlessBase, transport: 'xhttp', extra: '{"fancy":1}' },
	{ ...vlessBase, transport: 'xhttp', extra: '{"downloadSettings":{}}' }, { ...vlessBase, transport: 'xhttp', extra: '{"xmux":{"streams":1}}' },
	{ ...vlessBase, flow: 'xtls-rprx-vision', transport: 'ws' }, { ...vlessBase, flow: 'xtls-rprx-vision', transport: 'tcp' },
	{ type: 'trojan', server: '198.51.100.6', port: '443', password: 'pw', transport: 'grpc', host: 'g.example.org' },
	// A transport under a pinned certificate or a CA file (both sides' options together).
	{ ...vlessBase, transport: 'ws', path: '/ws', pinned_sha256: ['ab'.repeat(32)] },
	{ type: 'trojan', server: '198.51.100.6', port: '443', password: 'pw', transport: 'xhttp', ca_file: 'ca.pem', padding_bytes: '0-1' },
];

const customCases = [
	{ subnet: ['203.0.113.0/24', '2001:db8:3::/64'] }, { subnet: ['203.0.113.5/24'] }, { subnet: ['203.0.113.0/33'] },
	{ subnet: ['::ffff:1.2.3.4/120'] }, { subnet: ['foo'] }, { subnet: ['203.0.113.0/024'] }, { subnet: ['fe80::1%eth0/64'] },
	{ subnet: ['203.0.113.0'] }, { subnet: ['2001:db8:3::/129'] }, { subnet: ['1.2.3.4/+8'] }, { subnet: ['1::2::3/64'] },
	{ url: ['https://example.org/x.txt'] }, { url: ['ftp://example.org/x'] }, { url: ['https://'] },
	{ url: ['http://a b/'] }, { url: ['https://example.org/a b'] }, { url: ['HTTPS://example.org/'] },
	{ url: ['example.org/list'] }, { url: ['http://[2001:db8::1]:8080/x'] }, { url: ['http://host:port/'] },
	{ url: ['http://user:pw@example.org/l.txt'] }, { url: ['http://:80/'] },
];

const subscriptionCases = [
	{ url: 'https://panel.example.org/sub/token' }, {}, { url: 'ftp://panel.example.org/x' }, { url: 'https://' },
	{ url: 'https://panel.example.org/a b' }, { url: 'https://panel.example.org/s', interval: '6h' },
	{ url: 'https://panel.example.org/s', interval: '5m' }, { url: 'https://panel.example.org/s', interval: '1d' },
	{ url: 'https://panel.example.org/s', interval: 'soon' }, { url: 'https://panel.example.org/s', interval: '0' },
	{ url: 'https://panel.example.org/s', priority: '1001' }, { url: 'https://panel.example.org/s', priority: '0' },
	{ url: 'https://panel.example.org/s', user_agent: 'v2rayNG/1.8.5' }, { url: 'https://panel.example.org/s', user_agent: 'Happ ü' },
	{ url: 'https://panel.example.org/s', user_agent: 'x'.repeat(257) }, { url: 'https://panel.example.org/s', hwid: 'a b' },
	{ url: 'https://panel.example.org/s', hwid: 'abcdef0123456789' }, { url: 'https://panel.example.org/s', hwid: 'x'.repeat(65) },
	{ url: 'https://panel.example.org/s', include: ['NL', 'Амстердам'], exclude: ['a\tb'] },
];

const header = "config main 'main'\n\toption enabled '0'\n";

test('main options: the form and tgtun config check agree', () => {
	for (const o of mainCases) {
		assert.deepEqual(formMain(o), daemonErrors(sectionText('main', 'main', o)), `main ${JSON.stringify(o)}`);
	}
});

test('proxy options: the form and tgtun config check agree', () => {
	for (const o of proxyCases) {
		assert.deepEqual(formProxy(o), daemonErrors(header + sectionText('proxy', 'p', o)), `proxy ${JSON.stringify(o)}`);
	}
});

test('transports: the form and tgtun config check agree', () => {
	for (const o of transportCases) {
		assert.deepEqual(formProxy(o), daemonErrors(header + sectionText('proxy', 'p', o)), `proxy ${JSON.stringify(o)}`);
	}
});

test('custom subnets and URLs: the form and tgtun config check agree', () => {
	for (const o of customCases) {
		assert.deepEqual(formCustom(o), daemonErrors(header + sectionText('custom', 'mine', o)), `custom ${JSON.stringify(o)}`);
	}
});

test('subscription options: the form and tgtun config check agree', () => {
	for (const o of subscriptionCases) {
		assert.deepEqual(formSubscription(o), daemonErrors(header + sectionText('subscription', 'sub', o)), `subscription ${JSON.stringify(o)}`);
	}
});

test('the cases reach both verdicts and the brief\'s example wording', () => {
	assert.deepEqual(formProxy({ server: '198.51.100.6', port: '70000' }), ["port '70000' is out of range 1-65535"]);
	const all = [...mainCases.map(formMain), ...proxyCases.map(formProxy), ...transportCases.map(formProxy), ...customCases.map(formCustom)];
	assert.ok(all.filter((e) => e.length === 0).length >= 20, 'enough accepted values');
	assert.ok(all.filter((e) => e.length > 0).length >= 50, 'enough rejected values');
});
