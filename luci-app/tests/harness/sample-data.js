/*
 * Sample data for the LuCI stand-in (luci-stub.js): a router's /etc/config/tgtun, its
 * network devices, and the answers of the tgtun ubus object, shaped as the daemon's
 * JSON (daemon/control Status, CheckReport; lists.ListStatus; proxy.MemberStatus).
 * ?scenario=stopped makes every tgtun call fail as when the daemon is not running.
 */
(function(G) {
	'use strict';
	var params = new URLSearchParams(location.search);
	var now = Date.now();
	function ago(seconds) { return new Date(now - seconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z') }

	G.STUB_DEVICES = [
		{ name: 'br-lan', type: 'bridge', networks: [ 'lan' ] },
		{ name: 'br-guest', type: 'bridge', networks: [ 'guest' ] },
		{ name: 'eth0', type: 'ethernet', networks: [] },
		{ name: 'wan', type: 'ethernet', networks: [ 'wan', 'wan6' ] },
		{ name: 'phy0-ap0', type: 'wifi', networks: [ 'lan' ] }
	];

	G.STUB_UCI = { tgtun: [
		{ '.type': 'main', '.name': 'main', enabled: '1', tun_name: 'tgtun0', tun_mtu: '1500', ipv6: '1',
			lan_iface: [ 'br-lan', 'br-guest' ], router_traffic: '0', fwmark: '0x100000', bypass_mark: '0x200000',
			route_table: '7470', rule_priority: '7470', fail_mode: 'block', update_interval: '24h',
			health_target: '149.154.167.51:443', health_interval: '10s', memory_limit: '32M', log_level: 'info' },
		{ '.type': 'proxy', '.name': 'primary', type: 'socks5', server: '198.51.100.6', port: '1080',
			username: 'alice', password: 'secret', udp: '1', priority: '10' },
		{ '.type': 'proxy', '.name': 'backup', type: 'shadowsocks', server: 'proxy.example.org', port: '8388',
			password: 'change me', cipher: 'chacha20-ietf-poly1305', udp: '1', priority: '20' },
		{ '.type': 'proxy', '.name': 'office', type: 'http', server: '198.51.100.20', port: '3128', priority: '30' },
		{ '.type': 'service', '.name': 'telegram', enabled: '1' },
		{ '.type': 'custom', '.name': 'mine', subnet: [ '203.0.113.0/24', '2001:db8:3::/64' ],
			url: [ 'https://example.org/my-list.txt' ] }
	] };

	var status = {
		running: true, version: '0.3.0', uptime: '26h3m12s', config: '/etc/config/tgtun',
		last_reload: ago(3720), last_reload_error: '',
		warnings: [ "/etc/config/tgtun:31: proxy 'office': udp '1' has no effect on an http proxy (HTTP CONNECT carries only TCP); UDP to targets is dropped" ],
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
				last_check: ago(9), flows: 0, active: false }
		],
		lists: [
			{ name: 'telegram', kind: 'service', url: 'https://core.telegram.org/resources/cidr.txt', origin: 'download',
				entries4: 9, entries6: 5, updated_at: ago(5400), last_attempt: ago(5400), last_error: '' },
			{ name: 'whatsapp', kind: 'service', origin: 'embedded', entries4: 1, entries6: 0,
				updated_at: '0001-01-01T00:00:00Z', last_attempt: '0001-01-01T00:00:00Z', last_error: '' },
			{ name: 'mine', kind: 'custom', url: 'https://example.org/my-list.txt', origin: 'static',
				entries4: 1, entries6: 1, last_attempt: ago(90), last_error: 'GET https://example.org/my-list.txt: 404 Not Found' }
		],
		flows: { active_tcp: 3, active_udp: 1, total_tcp: 100, total_udp: 7, rejected: 0, dropped_udp: 0,
			bytes_up: 12345678, bytes_down: 678901234 }
	};

	var check = { ok: false, steps: [
		{ name: 'config', ok: true, detail: '/etc/config/tgtun: ok, 3 proxies, 2 services, 1 custom list' },
		{ name: 'tun', ok: true, detail: 'tgtun0 is up, MTU 1500' },
		{ name: 'nftables', ok: true, detail: 'table inet tgtun: dst4 11 prefixes, dst6 6 prefixes' },
		{ name: 'ip rules', ok: true, detail: 'fwmark 0x100000/0x100000 lookup 7470 (IPv4 and IPv6)' },
		{ name: 'route', ok: true, detail: '149.154.167.51 from br-lan goes to tgtun0' },
		{ name: "proxy 'primary'", ok: true, detail: 'socks5 198.51.100.6:1080: reached 149.154.167.51:443 in 12ms' },
		{ name: "proxy 'office'", ok: false, detail: 'http 198.51.100.20:3128: CONNECT refused: 407 Proxy Authentication Required',
			hint: 'the proxy wants a username and password: set username and password of this proxy in Settings' }
	] };

	var stopped = params.get('scenario') == 'stopped';
	G.STUB_UBUS = stopped ? {} : { tgtun: {
		status: status,
		reload: { reloaded: true },
		check: check,
		update_lists: function() { return { lists: status.lists } }
	} };
	if (stopped)
		G.STUB_UCI.tgtun[0].enabled = '1';
})(window);
