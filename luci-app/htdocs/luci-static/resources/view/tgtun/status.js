'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require uci';
'require ui';

/*
 * Status of the tgtun daemon, from `ubus call tgtun status`, refreshed every 5 seconds.
 * A failing call means the daemon is not running (or not on ubus): the error is shown
 * with what to do about it.
 */

var callStatus = rpc.declare({ object: 'tgtun', method: 'status', reject: true });
var callReload = rpc.declare({ object: 'tgtun', method: 'reload', reject: true });
var callUpdateLists = rpc.declare({ object: 'tgtun', method: 'update_lists', reject: true });
var callCheck = rpc.declare({ object: 'tgtun', method: 'check', reject: true });
var callUpdateSubscriptions = rpc.declare({ object: 'tgtun', method: 'update_subscriptions', reject: true });

var NEVER = '0001-01-01T00:00:00Z';

function fetchStatus() {
	return callStatus().then(function(st) {
		if (!L.isObject(st))
			throw new Error(_('The daemon sent no status.'));
		return { status: st };
	}, function(err) {
		return { error: err };
	});
}

/* An error's message without the stack trace LuCI's L.raise() appends to it. */
function errorText(err) {
	var msg = (err && err.message) ? err.message : String(err);
	return msg.split('\n')[0].replace(/\s+at \S+ \(\S+:\d+:\d+\)$/, '').trim();
}

/* The failure of a call, as rpc.js words it: "failed with error -32000: …" when
 * uhttpd refuses it, "failed with ubus code 4: …" when ubus does. */
function errorCode(err) {
	var m = /failed with (?:error|ubus code) (-?\d+)/.exec(errorText(err));
	return m ? +m[1] : null;
}

/* Time since an RFC 3339 stamp, e.g. "5m ago"; "never" for none. */
function age(stamp) {
	if (!stamp || stamp == NEVER)
		return _('never');
	var t = Date.parse(stamp);
	if (isNaN(t))
		return stamp;
	var s = Math.max(0, Math.round((Date.now() - t) / 1000));
	if (s < 60)
		return _('%ds ago').format(s);
	if (s < 3600)
		return _('%dm ago').format(Math.floor(s / 60));
	if (s < 86400)
		return _('%dh %dm ago').format(Math.floor(s / 3600), Math.floor(s % 3600 / 60));
	return _('%dd %dh ago').format(Math.floor(s / 86400), Math.floor(s % 86400 / 3600));
}

/* Time until an RFC 3339 stamp, e.g. "in 5h 3m"; "-" for none. */
function untilText(stamp) {
	if (!stamp || stamp == NEVER)
		return '-';
	var t = Date.parse(stamp);
	if (isNaN(t))
		return stamp;
	var s = Math.max(0, Math.round((t - Date.now()) / 1000));
	if (s < 60)
		return _('now');
	if (s < 3600)
		return _('in %dm').format(Math.floor(s / 60));
	return _('in %dh %dm').format(Math.floor(s / 3600), Math.floor(s % 3600 / 60));
}

function bytes(n) {
	var units = [ 'B', 'KiB', 'MiB', 'GiB', 'TiB' ], i = 0;
	n = +n || 0;
	while (n >= 1024 && i < units.length - 1) {
		n /= 1024;
		i++;
	}
	return (i == 0 ? '%d %s' : '%.1f %s').format(n, units[i]);
}

/* Latency from nanoseconds. */
function latency(ns) {
	if (!ns)
		return '-';
	return (ns >= 1e9) ? '%.2f s'.format(ns / 1e9) : '%d ms'.format(Math.round(ns / 1e6));
}

function badge(ok, yes, no) {
	return E('span', { 'class': 'tgtun-badge ' + (ok ? 'tgtun-ok' : 'tgtun-fail') }, asText(ok ? yes : no));
}

/* Text from the daemon (and through it from proxy servers and subscription providers) goes
 * into the page as text: LuCI's E() takes a string child as markup, the strings of an array
 * as text nodes. */
function asText(c) {
	return (typeof c == 'string' || typeof c == 'number') ? [ String(c) ] : c;
}

function table(titles, rows, empty) {
	var t = E('table', { 'class': 'table' }, [
		E('tr', { 'class': 'tr table-titles' }, titles.map(function(title) {
			return E('th', { 'class': 'th' }, title);
		}))
	]);
	if (rows.length == 0)
		t.appendChild(E('tr', { 'class': 'tr placeholder' }, [
			E('td', { 'class': 'td', 'colspan': titles.length }, E('em', {}, empty))
		]));
	rows.forEach(function(cells) {
		t.appendChild(E('tr', { 'class': 'tr' }, cells.map(function(c, i) {
			return E('td', { 'class': 'td', 'data-title': titles[i] }, asText(c));
		})));
	});
	return t;
}

/* Label/value rows, as in LuCI's own overview tables. */
function facts(rows) {
	return E('table', { 'class': 'table' }, rows.filter(function(r) { return r != null }).map(function(r) {
		return E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td left', 'width': '33%' }, r[0]),
			E('td', { 'class': 'td left' }, asText(r[1]))
		]);
	}));
}

function section(title, content) {
	return E('div', { 'class': 'cbi-section' }, [ E('h3', {}, title) ].concat(content));
}

var TYPE_NAMES = {
	'socks5': 'SOCKS5', 'http': 'HTTP', 'shadowsocks': 'Shadowsocks', 'vless': 'VLESS', 'trojan': 'Trojan',
	'interface': _('interface')
};

var ORIGINS = {
	'download': _('downloaded'),
	'cache': _('cached download'),
	'embedded': _('built-in copy'),
	'static': _('configured subnets'),
	'none': _('nothing yet')
};

/* Through uhttpd's /ubus: -32000 object not found, -32002 access denied; ubus' own
 * status codes 4 (not found) and 6 (permission denied) mean the same. */
var STEP_HINTS = {
	'-32000': _('The tgtun service is not running, or not registered on ubus. Start it with "/etc/init.d/tgtun start" and read "logread -e tgtun" for why it stopped.'),
	'-32002': _('This login may not query tgtun: the rpcd access list luci-app-tgtun is missing or not granted.')
};

return view.extend({
	load: function() {
		return Promise.all([ fetchStatus(), L.resolveDefault(uci.load('tgtun'), null) ]).then(function(r) {
			return r[0];
		});
	},

	renderNotRunning: function(err) {
		var code = { 4: -32000, 6: -32002 }[errorCode(err)] || errorCode(err);
		var enabled = uci.get('tgtun', 'main', 'enabled');
		var why = (enabled != null && [ '0', 'no', 'off', 'false', 'disabled' ].indexOf(String(enabled).toLowerCase()) >= 0)
			? _('tgtun is disabled in Settings: tick Enable there and save.')
			: (STEP_HINTS[code] || _('The status call failed. Read "logread -e tgtun" on the router for details.'));

		return section(_('Service'), [
			facts([
				[ _('State'), badge(false, '', _('Not running')) ],
				[ _('Error'), E('code', {}, [ errorText(err) ]) ],
				[ _('What to do'), why ]
			])
		]);
	},

	renderService: function(st) {
		var net = st.net || {};
		var setup = [
			[ net.TUNPresent && net.TUNUp, _('tunnel device up') ],
			[ net.Table, _('routing table') ],
			[ net.Rules4 && (net.Rules6 || !net.Targets6), _('ip rules') ],
			[ net.Route4 && (net.Route6 || !net.Targets6), _('routes') ],
			[ st.marking && net.Marking, _('traffic marking') ]
		];

		return section(_('Service'), [
			facts([
				[ _('State'), st.running ? badge(true, _('Running'), '') : badge(false, '', _('Not running')) ],
				[ _('Version'), st.version || '-' ],
				[ _('Uptime'), st.uptime || '-' ],
				[ _('Configuration'), E('span', {}, [
					st.config || '-', ' · ', _('reloaded %s').format(age(st.last_reload))
				]) ],
				st.last_reload_error ? [ _('Last reload failed'), E('span', { 'class': 'tgtun-error' },
					[ _('%s (the previous configuration is still in use)').format(st.last_reload_error) ]) ] : null,
				[ _('When no proxy works'), st.fail_mode == 'direct' ? _('traffic goes direct') : _('traffic is blocked') ],
				[ _('Network setup'), E('span', {}, setup.map(function(s) {
					return badge(s[0], '✓ ' + s[1], '✗ ' + s[1]);
				})) ],
				[ _('Target prefixes'), _('%d IPv4, %d IPv6 (bypassed: %d IPv4, %d IPv6)').format(
					net.Targets4 || 0, net.Targets6 || 0, net.Bypass4 || 0, net.Bypass6 || 0) ],
				net.RouterTraffic ? [ _('Router\'s own traffic'), _('tunnelled too') ] : null,
				st.net_error ? [ _('Network error'), E('span', { 'class': 'tgtun-error' }, [ st.net_error ]) ] : null,
				(st.warnings && st.warnings.length) ? [ _('Warnings'), E('ul', { 'class': 'tgtun-warnings' },
					st.warnings.map(function(w) { return E('li', {}, [ w ]) })) ] : null
			])
		]);
	},

	renderProxies: function(proxies) {
		return section(_('Proxies'), table(
			[ _('Name'), _('Type'), _('Server'), _('Health'), _('Latency'), _('Last check'), _('Flows'), _('Last error') ],
			(proxies || []).map(function(p) {
				return [
					E('span', { 'style': 'white-space:nowrap' }, [ p.name, p.active ? ' ' : '', p.active ? E('span', { 'class': 'tgtun-badge tgtun-active' }, _('in use')) : '' ]),
					TYPE_NAMES[p.type] || p.type || '-',
					p.server || p['interface'] || '-',
					badge(p.healthy, _('healthy'), _('unhealthy')),
					p.healthy ? latency(p.latency) : '-',
					age(p.last_check),
					String(p.flows || 0),
					(p.last_error || p.error || p.hint) ? E('div', {}, [
						(p.last_error || p.error) ? E('div', { 'class': 'tgtun-error' }, [ p.last_error || p.error ]) : '',
						p.hint ? E('div', { 'class': 'tgtun-hint' }, [ E('strong', {}, _('Hint:')), ' ', p.hint ]) : ''
					]) : '-'
				];
			}),
			_('No proxy has a server: set one in Settings.')));
	},

	renderLists: function(lists) {
		return section(_('Lists'), table(
			[ _('Name'), _('Source'), _('Entries'), _('Updated'), _('Last attempt'), _('Last error') ],
			(lists || []).map(function(l) {
				return [
					E('span', { 'title': l.url || '' }, [ l.name, ' ', E('small', {}, '(%s)'.format(l.kind)) ]),
					ORIGINS[l.origin] || l.origin,
					_('%d IPv4, %d IPv6').format(l.entries4 || 0, l.entries6 || 0),
					age(l.updated_at),
					age(l.last_attempt),
					l.last_error ? E('span', { 'class': 'tgtun-error' }, [ l.last_error ]) : '-'
				];
			}),
			_('No lists: tick a service or add subnets in Settings.')));
	},

	renderFlows: function(f) {
		f = f || {};
		var top = Array.isArray(f.top_devices) ? f.top_devices : [];
		return section(_('Traffic'), facts([
			[ _('Active connections'), _('%d TCP, %d UDP').format(f.active_tcp || 0, f.active_udp || 0) ],
			[ _('Since start'), _('%d TCP, %d UDP').format(f.total_tcp || 0, f.total_udp || 0) ],
			[ _('Sent / received'), '%s / %s'.format(bytes(f.bytes_up), bytes(f.bytes_down)) ],
			[ _('Refused connections'), String(f.rejected || 0) ],
			f.per_device_limit != null ? [ _('Limit per device'), _('%d connections; refused over it: %d').format(
				f.per_device_limit, f.refused_per_device || 0) ] : null,
			top.length ? [ _('Busiest devices'), E('ul', { 'class': 'tgtun-warnings' }, top.map(function(d) {
				return E('li', {}, [ _('%s: %d connections').format(d.address, d.flows || 0) ]);
			})) ] : null,
			[ _('Dropped UDP datagrams'), String(f.dropped_udp || 0) ]
		]));
	},

	renderServices: function(services) {
		if (!Array.isArray(services))
			return null;
		return section(_('Services'), table(
			[ _('Service'), _('State'), _('Address ranges'), _('Domains'), _('Resolved addresses') ],
			services.map(function(svc) {
				return [
					svc.name,
					badge(svc.enabled, _('enabled'), _('off')),
					String(svc.ranges || 0),
					String(svc.domains || 0),
					String(svc.resolved || 0)
				];
			}),
			_('No services: tick them in Settings.')));
	},

	/* Each subscription: its proxies (with the names the provider gave them), when it
	 * was fetched and why the last refresh failed, traffic and expiry. The provider's
	 * text goes into E() only inside arrays, which LuCI appends as text nodes (a string
	 * alone would be taken as markup). */
	renderSubscriptions: function(list) {
		if (!Array.isArray(list) || list.length == 0)
			return null;
		return section(_('Subscriptions'), table(
			[ _('Name'), _('Proxies'), _('Updated'), _('Next refresh'), _('Traffic used'), _('Expires'), _('Last error') ],
			list.map(function(s) {
				var members = s.members || [], u = s.userinfo;
				var names = members.slice(0, 8).map(function(m) {
					return (m.label && m.label != m.name) ? '%s (%s)'.format(m.name, m.label) : m.name;
				}).join(', ');
				if (members.length > 8)
					names += ' ' + _('and %d more').format(members.length - 8);
				var used = '-';
				if (u)
					used = u.total ? _('%s of %s').format(bytes((u.upload || 0) + (u.download || 0)), bytes(u.total))
						: _('%s (no limit)').format(bytes((u.upload || 0) + (u.download || 0)));
				var expires = (u && u.expire && u.expire != NEVER) ? new Date(u.expire).toISOString().substring(0, 10) : '-';
				return [
					E('span', { 'title': s.url || '' }, [ s.name, s.enabled ? '' : E('small', {}, ' (' + _('off') + ')') ]),
					E('div', {}, [
						E('strong', {}, String(members.length)), members.length ? ': ' + names : '',
						s.skipped ? E('div', { 'class': 'tgtun-hint', 'title': (s.skip_reasons || []).join('\n') },
							_('%d links skipped (not usable)').format(s.skipped)) : ''
					]),
					E('span', {}, [ age(s.updated_at), s.updated_at && s.updated_at != NEVER ? ' (' + (ORIGINS[s.origin] || s.origin) + ')' : '' ]),
					s.enabled ? untilText(s.next_refresh) : '-',
					used,
					expires,
					s.last_error ? E('div', { 'class': 'tgtun-error' }, [
						s.last_error, members.length ? E('div', { 'class': 'tgtun-hint' }, _('The proxies from the last good refresh stay in use.')) : ''
					]) : (s.announce ? E('div', { 'class': 'tgtun-hint' }, [ s.announce ]) : '-')
				];
			}),
			_('No subscriptions.')));
	},

	renderDNS: function(dns) {
		if (!L.isObject(dns))
			return null;
		var ok = dns.dnsmasq == 'ok';
		return section(_('DNS'), facts([
			[ _('Forwarder'), dns.listen || '-' ],
			[ _('Upstream resolver'), dns.upstream || '-' ],
			[ _('dnsmasq'), ok ? badge(true, _('ok'), '') : E('span', { 'class': 'tgtun-error' }, [ dns.dnsmasq || _('unknown') ]) ]
		]));
	},

	renderBody: function(res) {
		if (res.error)
			return [ this.renderNotRunning(res.error) ];
		var st = res.status;
		return [
			this.renderService(st),
			this.renderProxies(st.proxies),
			this.renderSubscriptions(st.subscriptions),
			this.renderServices(st.services),
			this.renderLists(st.lists),
			this.renderDNS(st.dns),
			this.renderFlows(st.flows)
		].filter(function(x) { return x != null });
	},

	refresh: function() {
		return fetchStatus().then(L.bind(function(res) {
			dom.content(this.body, this.renderBody(res));
		}, this));
	},

	handleUpdateLists: function() {
		return callUpdateLists().then(L.bind(function(res) {
			var lists = (res && res.lists) || [];
			var failed = lists.filter(function(l) { return l.last_error });
			if (res && res.error)
				ui.addNotification(null, E('p', {}, [ _('Updating the lists failed: %s').format(res.error) ]), 'error');
			else if (failed.length)
				ui.addNotification(null, E('p', {}, [ _('Some lists could not be updated: %s').format(
					failed.map(function(l) { return l.name + ': ' + l.last_error }).join('; ')) ]), 'warning');
			else
				ui.addNotification(null, E('p', {}, _('Lists updated: %d.').format(lists.length)), 'info');
			return this.refresh();
		}, this), function(err) {
			ui.addNotification(null, E('p', {}, [ _('Updating the lists failed: %s').format(errorText(err)) ]), 'error');
		});
	},

	handleUpdateSubscriptions: function() {
		return callUpdateSubscriptions().then(L.bind(function(res) {
			var list = (res && res.subscriptions) || [];
			if (res && res.error)
				ui.addNotification(null, E('p', {}, [ _('Some subscriptions could not be refreshed (their last proxies stay in use): %s').format(res.error) ]), 'warning');
			else
				ui.addNotification(null, E('p', {}, _('Subscriptions refreshed: %d.').format(list.length)), 'info');
			return this.refresh();
		}, this), function(err) {
			ui.addNotification(null, E('p', {}, [ _('Refreshing the subscriptions failed: %s').format(errorText(err)) ]), 'error');
		});
	},

	handleReload: function() {
		return callReload().then(L.bind(function() {
			ui.addNotification(null, E('p', {}, _('The configuration was reloaded.')), 'info');
			return this.refresh();
		}, this), L.bind(function(err) {
			ui.addNotification(null, E('p', {},
				[ _('Reload failed: %s. The daemon keeps its previous configuration; see Last reload failed below.').format(errorText(err)) ]), 'error');
			return this.refresh();
		}, this));
	},

	handleCheck: function() {
		ui.showModal(_('Diagnostics'), [ E('p', { 'class': 'spinning' }, _('Checking the configuration, the network setup and each proxy…')) ]);
		return callCheck().then(function(res) {
			var steps = (res && res.steps) || [];
			ui.showModal(_('Diagnostics'), [
				E('p', {}, res && res.ok
					? badge(true, _('Everything works.'), '')
					: badge(false, '', _('Something is wrong: see the failed steps and their hints.'))),
				table([ _('Check'), _('Result'), _('Detail') ], steps.map(function(s) {
					return [
						s.name,
						badge(s.ok, _('ok'), _('failed')),
						E('div', {}, [
							E('div', {}, [ s.detail || '' ]),
							s.hint ? E('div', { 'class': 'tgtun-hint' }, [ E('strong', {}, _('Hint:')), ' ', s.hint ]) : ''
						])
					];
				}), _('No checks were run.')),
				E('div', { 'class': 'right' }, [
					E('button', { 'class': 'cbi-button', 'click': ui.hideModal }, _('Close'))
				])
			]);
		}, function(err) {
			ui.showModal(_('Diagnostics'), [
				E('p', {}, badge(false, '', _('The diagnostics could not run: %s').format(errorText(err)))),
				E('div', { 'class': 'right' }, [
					E('button', { 'class': 'cbi-button', 'click': ui.hideModal }, _('Close'))
				])
			]);
		});
	},

	render: function(res) {
		this.body = E('div', { 'id': 'tgtun-status' }, this.renderBody(res));
		poll.add(L.bind(this.refresh, this), 5);

		return E('div', {}, [
			E('style', {}, [
				'.tgtun-badge{display:inline-block;padding:0 .5em;margin:0 .3em .2em 0;border-radius:3px;color:#fff;font-size:90%}',
				'.tgtun-ok{background:#2e8540}.tgtun-fail{background:#c9302c}.tgtun-active{background:#337ab7;margin-left:.5em}',
				'.tgtun-error{color:#c9302c}.tgtun-hint{margin-top:.3em;color:#555}.tgtun-warnings{margin:0;padding-left:1.2em}'
			].join('')),
			E('h2', {}, _('tgtun status')),
			E('div', { 'class': 'cbi-map-descr' }, _('What the tunnel does now. Refreshed every 5 seconds.')),
			E('div', { 'class': 'cbi-page-actions', 'style': 'text-align:left' }, [
				E('button', { 'class': 'cbi-button cbi-button-action', 'click': ui.createHandlerFn(this, 'handleUpdateLists') }, _('Update lists now')),
				' ',
				E('button', { 'class': 'cbi-button cbi-button-action', 'click': ui.createHandlerFn(this, 'handleUpdateSubscriptions') }, _('Refresh subscriptions')),
				' ',
				E('button', { 'class': 'cbi-button cbi-button-action', 'click': ui.createHandlerFn(this, 'handleCheck') }, _('Run diagnostics')),
				' ',
				E('button', { 'class': 'cbi-button cbi-button-neutral', 'click': ui.createHandlerFn(this, 'handleReload') }, _('Reload configuration'))
			]),
			this.body
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
