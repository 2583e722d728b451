'use strict';
// Test data: router configs (/etc/config/tgtun as text), what luci-rpc answers (DHCP
// leases, devices), and the answers of a fake tgtun object, shaped as the daemon's JSON
// (daemon/control Status, CheckResult; lists.ListStatus; proxy.MemberStatus).
const fs = require('node:fs');
const path = require('node:path');
const { appDir } = require('./i18n');

// /etc/config/tgtun as the package ships it, and the tests' router config (fixtures/sample.config).
const shippedText = () => fs.readFileSync(path.join(appDir, '..', 'openwrt/files/etc/config/tgtun'), 'utf8');
const sampleText = () => fs.readFileSync(path.join(__dirname, '..', 'fixtures/sample.config'), 'utf8');

function ago(seconds) { return new Date(Date.now() - seconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z'); }

function status() {
	return {
		running: true, version: '0.3.0', uptime: '26h3m12s', config: '/etc/config/tgtun',
		last_reload: ago(3720), last_reload_error: '',
		warnings: ["/etc/config/tgtun:31: proxy 'office': udp '1' has no effect on an http proxy (HTTP CONNECT carries only TCP); UDP to targets is dropped"],
		fail_mode: 'block', marking: true,
		net: { TUNPresent: true, TUNUp: true, Table: true, RouterTraffic: false, Marking: true, Rules4: true, Rules6: true,
			Route4: true, Route6: true, Targets4: 11, Targets6: 6, Bypass4: 1, Bypass6: 0 },
		net_error: '',
		proxies: [
			{ name: 'primary', type: 'socks5', server: '198.51.100.6:1080', healthy: true, latency: 12400000,
				last_error: '', last_check: ago(4), flows: 42, active: true },
			{ name: 'backup', type: 'shadowsocks', server: 'proxy.example.org:8388', healthy: true, latency: 48000000,
				last_error: '', last_check: ago(7), flows: 3, active: false },
			{ name: 'office', type: 'http', server: '198.51.100.20:3128', healthy: false, latency: 0,
				last_error: 'http 198.51.100.20:3128: CONNECT 149.154.167.51:443: 407 Proxy Authentication Required',
				last_check: ago(9), flows: 0, active: false },
			{ name: 'reality', type: 'vless', server: '198.51.100.8:443', healthy: false, latency: 0,
				last_error: 'vless 198.51.100.8:443: REALITY handshake failed: server did not prove the key',
				hint: 'wrong public_key or short_id?', last_check: ago(3), flows: 0, active: false },
			{ name: 'tro', type: 'trojan', server: 'trojan.example.org:443', healthy: true, latency: 61000000,
				last_error: '', last_check: ago(5), flows: 0, active: false },
			{ name: 'wg', type: 'interface', server: 'wg0', healthy: true, latency: 30000000,
				last_error: '', last_check: ago(6), flows: 0, active: false },
		],
		services: [
			{ name: 'telegram', enabled: true, ranges: 14, domains: 9, resolved: 31 },
			{ name: 'whatsapp', enabled: false, ranges: 0, domains: 0, resolved: 0 },
			{ name: 'signal', enabled: false, ranges: 0, domains: 0, resolved: 0 },
			{ name: 'discord', enabled: false, ranges: 0, domains: 0, resolved: 0 },
			{ name: 'viber', enabled: false, ranges: 0, domains: 0, resolved: 0 },
		],
		dns: { listen: '127.0.0.1:5354', upstream: '1.1.1.1:53', dnsmasq: 'ok' },
		subscriptions: [
			{ name: 'myvpn', url: 'https://panel.example.org/<redacted>', enabled: true, fetched_via: 'proxy', origin: 'download',
				members: [{ name: 'myvpn_nl_amsterdam', label: '🇳🇱 NL Amsterdam' }, { name: 'myvpn_2', label: 'Москва' }],
				links: 3, skipped: 1, skip_reasons: ['link 3: vmess link: not supported'], updated_at: ago(1800), last_attempt: ago(60),
				next_refresh: new Date(Date.now() + 3 * 3600e3).toISOString(), interval: '12h0m0s',
				last_error: 'HTTP 503 Service Unavailable',
				userinfo: { upload: 1073741824, download: 2147483648, total: 107374182400, expire: '2027-03-01T00:00:00Z' } },
		],
		lists: [
			{ name: 'telegram', kind: 'service', url: 'https://core.telegram.org/resources/cidr.txt', origin: 'download',
				entries4: 9, entries6: 5, updated_at: ago(5400), last_attempt: ago(5400), last_error: '' },
			{ name: 'mine', kind: 'custom', url: 'https://example.org/my-list.txt', origin: 'static',
				entries4: 1, entries6: 1, last_attempt: ago(90), last_error: 'GET https://example.org/my-list.txt: 404 Not Found' },
		],
		flows: { active_tcp: 3, active_udp: 1, total_tcp: 100, total_udp: 7, rejected: 0, dropped_udp: 0,
			bytes_up: 12345678, bytes_down: 678901234, per_device_limit: 1024, refused_per_device: 2,
			top_devices: [{ address: '192.168.1.23', flows: 3 }, { address: '192.168.1.40', flows: 1 }] },
	};
}

function check() {
	return { ok: false, steps: [
		{ name: 'config', ok: true, detail: '/etc/config/tgtun: ok, 3 proxies, 1 service, 1 custom list' },
		{ name: 'tun', ok: true, detail: 'tgtun0 is up, MTU 1500' },
		{ name: "proxy 'primary'", ok: true, detail: 'socks5 198.51.100.6:1080: reached 149.154.167.51:443 in 12ms' },
		{ name: "proxy 'office'", ok: false, detail: 'http 198.51.100.20:3128: CONNECT refused: 407 Proxy Authentication Required',
			hint: 'the proxy wants a username and password: set username and password of this proxy in Settings' },
	] };
}

// What a fake tgtun object on the bus answers (lucirouter checks that status and check
// have only members the daemon's types have): a daemon in states the test network does
// not produce (REALITY, Trojan, busy devices...).
function tgtunAnswers(st = status(), ck = check()) {
	return { status: st, check: ck, reload: { reloaded: true }, update_lists: { lists: st.lists },
		update_subscriptions: { subscriptions: st.subscriptions, error: 'subscription myvpn (https://panel.example.org/<redacted>): HTTP 503 Service Unavailable' } };
}

const devices = {
	'br-lan': { name: 'br-lan', type: 1, up: true, devtype: 'bridge', mac: '02:00:00:00:01:01', flags: { up: true, broadcast: true }, stats: {}, ipaddrs: [], ip6addrs: [] },
	'br-guest': { name: 'br-guest', type: 1, up: true, devtype: 'bridge', mac: '02:00:00:00:01:02', flags: { up: true, broadcast: true }, stats: {}, ipaddrs: [], ip6addrs: [] },
	'eth0': { name: 'eth0', type: 1, up: true, devtype: 'ethernet', mac: '02:00:00:00:01:03', flags: { up: true, broadcast: true }, stats: {}, ipaddrs: [], ip6addrs: [] },
	'wan': { name: 'wan', type: 1, up: true, devtype: 'ethernet', mac: '02:00:00:00:01:04', flags: { up: true, broadcast: true }, stats: {}, ipaddrs: [], ip6addrs: [] },
};

const leases = {
	dhcp_leases: [
		{ hostname: 'anna-phone', macaddr: '02:00:00:00:aa:01', ipaddr: '192.168.1.23', expires: 40000 },
		{ hostname: 'tv', macaddr: '02:00:00:00:aa:02', ipaddr: '192.168.1.40', expires: 30000 },
	],
	dhcp6_leases: [],
};

module.exports = { shippedText, sampleText, status, check, tgtunAnswers, devices, leases, ago };
