'use strict';
// A test web server that answers the browser as OpenWrt's uhttpd does, with rpcd behind
// its /ubus JSON-RPC endpoint and LuCI's dispatcher in front of the page shell:
//
// - /luci-static/…: LuCI's real client runtime (../shared/luci, see luci-runtime.js), the
//   bootstrap theme, and this app's views; a view of this app wins over the runtime's.
// - /cgi-bin/luci/admin/…: the page shell around a view (as header.ut/view.ut/footer.ut
//   render it: `L = new LuCI({...})`, then ui.instantiateView), the login form when the
//   session cookie is missing, the menu tree (menu.d), the translation table (window.TR,
//   keyed by LuCI's string hash, from the app's .po and LuCI's own base.po) and the
//   uci apply_rollback / apply_unchecked / confirm / revert endpoints.
// - /ubus: JSON-RPC 2.0, single or batched, `list` and `call` [sid, object, method, args]:
//   ACL checks with rpcd's access lists (the app's acl.d file plus LuCI base's grants),
//   `session login/access`, `uci get/set/add/delete/rename/order/changes/revert/commit/
//   apply/confirm` on a per-session delta with rpcd's semantics (`uci add` with the name of
//   an existing section changes that section's type and keeps its options; `set` with an
//   empty string changes nothing; arrays become lists), `luci getFeatures`, `luci-rpc getDHCPLeases/
//   getNetworkDevices/…`, `file list` (no preload directory), and the test's own objects
//   (tgtun status/check/reload/update_lists). Errors as uhttpd returns them: -32002
//   "Access denied" when the session may not call object/method, -32000 "Object not
//   found" when no such object is registered, -32602 for bad params; a method's ubus
//   status (3 method not found, 4 not found, 6 permission denied…) in `result: [code]`.
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { appDir, catalog } = require('./i18n');
const { luciRoot } = require('./luci-runtime');

const ERR = {
	PARSE: [-32700, 'Parse error'], REQUEST: [-32600, 'Invalid request'], METHOD: [-32601, 'Method not found'],
	PARAMS: [-32602, 'Invalid parameters'], OBJECT: [-32000, 'Object not found'],
	SESSION: [-32001, 'Session not found'], ACCESS: [-32002, 'Access denied'],
};
const UBUS = { OK: 0, INVALID_COMMAND: 1, INVALID_ARGUMENT: 2, METHOD_NOT_FOUND: 3, NOT_FOUND: 4, NO_DATA: 5, PERMISSION_DENIED: 6 };
const NOSID = '00000000000000000000000000000000';

class Status { constructor(code, data) { this.code = code; this.data = data; } }

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css',
	'.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png', '.gif': 'image/gif' };

// LuCI's translation key of a string: a 32-bit SuperFastHash (Paul Hsieh) of its UTF-8
// bytes as 8 hex digits, the function the runtime's _() looks strings up with.
function stringHash(s) {
	const b = Buffer.from(s, 'utf8');
	if (b.length === 0) return null;
	const u16 = (o) => ((b[o + 1] << 8) + b[o]) >>> 0;
	const s8 = (o) => (b[o] > 0x7f ? (b[o] - 256) >>> 0 : b[o]);
	let h = b.length >>> 0, off = 0;
	for (let n = b.length >>> 2; n > 0; n--, off += 4) {
		h = (h + u16(off)) >>> 0;
		const t = ((u16(off + 2) << 11) ^ h) >>> 0;
		h = ((h << 16) ^ t) >>> 0;
		h = (h + (h >>> 11)) >>> 0;
	}
	switch (b.length & 3) {
	case 3: h = (h + u16(off)) >>> 0; h = (h ^ (h << 16)) >>> 0; h = (h ^ (s8(off + 2) << 18)) >>> 0; h = (h + (h >>> 11)) >>> 0; break;
	case 2: h = (h + u16(off)) >>> 0; h = (h ^ (h << 11)) >>> 0; h = (h + (h >>> 17)) >>> 0; break;
	case 1: h = (h + s8(off)) >>> 0; h = (h ^ (h << 10)) >>> 0; h = (h + (h >>> 1)) >>> 0; break;
	}
	h = (h ^ (h << 3)) >>> 0; h = (h + (h >>> 5)) >>> 0;
	h = (h ^ (h << 4)) >>> 0; h = (h + (h >>> 17)) >>> 0;
	h = (h ^ (h << 25)) >>> 0; h = (h + (h >>> 6)) >>> 0;
	return (0x100000000 + h).toString(16).slice(1);
}

// rpcd access lists: { group: { read: { ubus: {obj: [methods]}, uci: [configs] }, write: … } }.
// LuCI base's grants that every logged-in LuCI user has (luci-base's acl.d, reduced to
// what the runtime and these views call).
const BASE_ACL = {
	'unauthenticated': { read: { ubus: { session: ['access', 'login'] } } },
	'luci-base': {
		read: {
			ubus: { luci: ['getFeatures', 'getVersion'], file: ['list', 'stat'], 'luci-rpc': ['getBoardJSON', 'getDHCPLeases',
				'getHostHints', 'getNetworkDevices', 'getWirelessDevices'], 'network.interface': ['dump'], network: ['get_proto_handlers'],
			uci: ['changes', 'get'], session: ['access'] },
			uci: ['luci'],
		},
		write: { ubus: { uci: ['add', 'apply', 'confirm', 'delete', 'order', 'rename', 'revert', 'set', 'commit'] } },
	},
};

function appAcl() {
	const dir = path.join(appDir, 'root/usr/share/rpcd/acl.d');
	const out = {};
	for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.json')))
		Object.assign(out, JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
	return out;
}

const clone = (x) => JSON.parse(JSON.stringify(x));

class Rpcd {
	// configs: { name: [sections] } as uci-text.js parses them; objects: { obj: { method: fn(args, session) } }
	// where fn returns data, a Status, or throws; users: { name: { password, groups } }.
	constructor({ configs = {}, objects = {}, users, devices, leases } = {}) {
		this.committed = clone(configs);
		if (!this.committed.luci) this.committed.luci = [{ '.type': 'core', '.name': 'main', '.anonymous': false, lang: 'en' }];
		this.objects = objects;
		this.acl = Object.assign({}, BASE_ACL, appAcl());
		this.users = users || { root: { password: 'secret', groups: Object.keys(this.acl) } };
		this.sessions = new Map();
		this.sessions.set(NOSID, { sid: NOSID, groups: ['unauthenticated'], delta: {}, changes: {} });
		this.calls = [];
		this.applied = [];
		this.pending = null;
		this.devices = devices || {};
		this.leases = leases || { dhcp_leases: [], dhcp6_leases: [] };
		this.anonSeq = 0x10;
	}

	// A new router state for the next test; logged-in sessions stay (with their grants).
	reset({ configs = {}, objects = {} } = {}) {
		const luci = this.committed.luci;
		this.committed = clone(configs);
		this.committed.luci = luci;
		this.objects = objects;
		this.calls = [];
		this.applied = [];
		this.pending = null;
		for (const s of this.sessions.values()) { s.delta = {}; s.changes = {}; s.groups = s.allGroups || s.groups; }
	}

	// Takes an ACL group from every session (as if the user's role lacked it).
	revoke(group) {
		for (const s of this.sessions.values()) { s.allGroups = s.allGroups || s.groups.slice(); s.groups = s.groups.filter((g) => g !== group); }
	}

	setLang(lang) { this.committed.luci.find((x) => x['.name'] === 'main').lang = lang; }

	// The committed config as /etc/config text.
	configText(name) { return require('./uci-text').serialize(this.committed[name]); }

	// The config a session sees: committed plus its own uncommitted changes.
	view(s, config) {
		if (!s.delta[config] && this.committed[config]) s.delta[config] = clone(this.committed[config]);
		return s.delta[config];
	}

	record(s, config, change) {
		(s.changes[config] = s.changes[config] || []).push(change);
	}

	allowed(s, scope, object, fn) {
		const perm = (fn === 'read' || fn === 'write') ? fn : null;
		for (const g of s.groups) {
			const grp = this.acl[g];
			if (!grp) continue;
			for (const mode of ['read', 'write']) {
				const m = grp[mode];
				if (!m) continue;
				if (scope === 'ubus' && m.ubus) {
					for (const [obj, methods] of Object.entries(m.ubus)) {
						if ((obj === object || obj === '*') && (methods.includes(fn) || methods.includes('*'))) return true;
					}
				}
				if (scope === 'uci' && Array.isArray(m.uci) && (m.uci.includes(object) || m.uci.includes('*'))) {
					if (perm === 'read' || mode === 'write') return true;
				}
			}
		}
		return false;
	}

	login(username, password) {
		const u = this.users[username];
		if (!u || u.password !== password) return null;
		const sid = crypto.randomBytes(16).toString('hex');
		const s = { sid, username, groups: ['unauthenticated'].concat(u.groups), delta: {}, changes: {}, token: crypto.randomBytes(16).toString('hex') };
		this.sessions.set(sid, s);
		return s;
	}

	// One JSON-RPC request object → its reply object.
	rpc(req) {
		const reply = (extra) => Object.assign({ jsonrpc: '2.0', id: req && req.id !== undefined ? req.id : null }, extra);
		const error = (e) => reply({ error: { code: e[0], message: e[1] } });
		if (!req || typeof req !== 'object' || req.jsonrpc !== '2.0' || typeof req.method !== 'string') return error(ERR.REQUEST);
		if (req.method === 'list') {
			const names = Object.keys(this.objects).concat(['session', 'uci', 'luci', 'luci-rpc', 'file']);
			return reply({ result: Array.isArray(req.params) && req.params.length ? {} : names });
		}
		if (req.method !== 'call') return error(ERR.METHOD);
		const p = req.params;
		if (!Array.isArray(p) || p.length < 3 || typeof p[0] !== 'string' || typeof p[1] !== 'string' || typeof p[2] !== 'string'
			|| (p[3] != null && (typeof p[3] !== 'object' || Array.isArray(p[3])))) return error(ERR.PARAMS);
		const [sid, object, method] = p;
		const args = p[3] || {};
		const s = this.sessions.get(sid);
		this.calls.push({ object, method, args });
		if (!s || !this.allowed(s, 'ubus', object, method)) return error(ERR.ACCESS);
		let out;
		try {
			out = this.call(s, object, method, args);
		} catch (e) {
			if (e === ERR.OBJECT) return error(ERR.OBJECT);
			throw e;
		}
		if (out instanceof Status) return reply({ result: out.data !== undefined ? [out.code, out.data] : [out.code] });
		return reply({ result: out === undefined ? [0] : [0, out] });
	}

	call(s, object, method, args) {
		switch (object) {
		case 'session': return this.callSession(s, method, args);
		case 'uci': return this.callUci(s, method, args);
		case 'luci':
			if (method === 'getFeatures') return { firewall4: true, dnsmasq: true, ipv6: true };
			if (method === 'getVersion') return { branch: 'LuCI test', revision: 'test' };
			return new Status(UBUS.METHOD_NOT_FOUND);
		case 'file':
			if (method === 'list') return new Status(UBUS.NOT_FOUND);
			return new Status(UBUS.METHOD_NOT_FOUND);
		case 'luci-rpc':
			if (method === 'getDHCPLeases') return clone(this.leases);
			if (method === 'getNetworkDevices') return clone(this.devices);
			if (method === 'getWirelessDevices' || method === 'getHostHints') return {};
			if (method === 'getBoardJSON') return { model: { id: 'test', name: 'Test router' }, network: {} };
			return new Status(UBUS.METHOD_NOT_FOUND);
		case 'network.interface':
			if (method === 'dump') return { interface: [] };
			return new Status(UBUS.METHOD_NOT_FOUND);
		case 'network':
			if (method === 'get_proto_handlers') return {};
			return new Status(UBUS.METHOD_NOT_FOUND);
		}
		const obj = this.objects[object];
		if (!obj) throw ERR.OBJECT;
		const fn = obj[method];
		if (!fn) return new Status(UBUS.METHOD_NOT_FOUND);
		return typeof fn === 'function' ? fn(args, s) : clone(fn);
	}

	callSession(s, method, args) {
		if (method === 'login') {
			const n = this.login(args.username, args.password);
			if (!n) return new Status(UBUS.PERMISSION_DENIED);
			return { ubus_rpc_session: n.sid, timeout: 300, expires: 300, acls: {}, data: { username: n.username } };
		}
		if (method === 'access') {
			if (args.scope && args.object && args.function) return { access: this.allowed(s, args.scope, args.object, args.function) };
			return { 'access-group': Object.fromEntries(s.groups.map((g) => [g, ['read', 'write']])) };
		}
		return new Status(UBUS.METHOD_NOT_FOUND);
	}

	callUci(s, method, a) {
		const cfgName = a.config;
		const need = (perm) => (typeof cfgName !== 'string' ? new Status(UBUS.INVALID_ARGUMENT)
			: !this.allowed(s, 'uci', cfgName, perm) ? new Status(UBUS.PERMISSION_DENIED)
				: !this.committed[cfgName] ? new Status(UBUS.NOT_FOUND) : null);
		const find = (cfg, name) => cfg.find((x) => x['.name'] === name);
		let st, cfg, sec;
		switch (method) {
		case 'get': {
			if ((st = need('read'))) return st;
			cfg = this.view(s, cfgName);
			const values = {};
			cfg.forEach((x, i) => {
				if (a.type && x['.type'] !== a.type) return;
				values[x['.name']] = Object.assign({ '.anonymous': !!x['.anonymous'], '.type': x['.type'], '.name': x['.name'], '.index': i },
					Object.fromEntries(Object.entries(x).filter(([k]) => !k.startsWith('.'))));
			});
			if (a.section != null) {
				if (!values[a.section]) return new Status(UBUS.NOT_FOUND);
				if (a.option != null) {
					const v = values[a.section][a.option];
					return v == null ? new Status(UBUS.NOT_FOUND) : { value: v };
				}
				return { values: values[a.section] };
			}
			return { values };
		}
		case 'changes': {
			const out = {};
			for (const [c, ch] of Object.entries(s.changes)) {
				if ((cfgName == null || c === cfgName) && ch.length && this.allowed(s, 'uci', c, 'read')) out[c] = clone(ch);
			}
			return { changes: out };
		}
		case 'set': {
			if ((st = need('write'))) return st;
			if (typeof a.section !== 'string' || typeof a.values !== 'object') return new Status(UBUS.INVALID_ARGUMENT);
			cfg = this.view(s, cfgName);
			if (!(sec = find(cfg, a.section))) return new Status(UBUS.NOT_FOUND);
			this.merge(s, cfgName, sec, a.values);
			return undefined;
		}
		case 'add': {
			if ((st = need('write'))) return st;
			if (typeof a.type !== 'string' || !/^[A-Za-z0-9_]+$/.test(a.type)) return new Status(UBUS.INVALID_ARGUMENT);
			cfg = this.view(s, cfgName);
			let name = a.name;
			if (name != null) {
				if (!/^[A-Za-z0-9_]+$/.test(name)) return new Status(UBUS.INVALID_ARGUMENT);
				// rpcd sets the section pointer section=name value=type: an existing section of
				// that name gets the new type and keeps its options.
				sec = find(cfg, name);
				if (sec) sec['.type'] = a.type;
				else cfg.push(sec = { '.type': a.type, '.name': name, '.anonymous': false });
			} else {
				name = `cfg${(this.anonSeq++).toString(16).padStart(2, '0')}${crypto.randomBytes(2).toString('hex')}`;
				cfg.push(sec = { '.type': a.type, '.name': name, '.anonymous': true });
			}
			this.record(s, cfgName, ['add', name, a.type]);
			if (a.values) this.merge(s, cfgName, sec, a.values, true);
			return { section: name };
		}
		case 'delete': {
			if ((st = need('write'))) return st;
			cfg = this.view(s, cfgName);
			if (!(sec = find(cfg, a.section))) return new Status(UBUS.NOT_FOUND);
			const opts = a.option != null ? [a.option] : Array.isArray(a.options) ? a.options : null;
			if (opts) {
				for (const o of opts) {
					if (o in sec) { delete sec[o]; this.record(s, cfgName, ['remove', a.section, o]); }
				}
			} else {
				cfg.splice(cfg.indexOf(sec), 1);
				this.record(s, cfgName, ['remove', a.section]);
			}
			return undefined;
		}
		case 'rename': {
			if ((st = need('write'))) return st;
			cfg = this.view(s, cfgName);
			if (!(sec = find(cfg, a.section))) return new Status(UBUS.NOT_FOUND);
			if (a.option != null) {
				sec[a.name] = sec[a.option]; delete sec[a.option];
			} else {
				sec['.name'] = a.name; sec['.anonymous'] = false;
			}
			this.record(s, cfgName, ['rename', a.section, a.option != null ? a.option : a.name].concat(a.option != null ? [a.name] : []));
			return undefined;
		}
		case 'order': {
			if ((st = need('write'))) return st;
			cfg = this.view(s, cfgName);
			(a.sections || []).forEach((name, i) => {
				const j = cfg.findIndex((x) => x['.name'] === name);
				if (j >= 0) { const [x] = cfg.splice(j, 1); cfg.splice(i, 0, x); this.record(s, cfgName, ['order', name, String(i)]); }
			});
			return undefined;
		}
		case 'revert': {
			if (this.pending) return new Status(UBUS.PERMISSION_DENIED);
			if ((st = need('write'))) return st;
			delete s.delta[cfgName];
			delete s.changes[cfgName];
			return undefined;
		}
		case 'commit': {
			if (this.pending) return new Status(UBUS.PERMISSION_DENIED);
			if ((st = need('write'))) return st;
			this.commit(s, [cfgName]);
			return undefined;
		}
		case 'apply': {
			if (this.pending) return new Status(UBUS.PERMISSION_DENIED);
			const configs = Object.keys(s.changes).filter((c) => s.changes[c].length);
			if (configs.length === 0) return new Status(UBUS.NO_DATA);
			const backup = clone(this.committed);
			this.commit(s, configs);
			if (a.rollback) this.pending = { backup, sid: s.sid };
			return undefined;
		}
		case 'confirm': {
			if (!this.pending) return new Status(UBUS.NO_DATA);
			this.pending = null;
			return undefined;
		}
		}
		return new Status(UBUS.METHOD_NOT_FOUND);
	}

	// rpcd's merge of `values` into a section (rpc_uci_merge_set; for `add`, appending):
	// an array replaces the option by a list (its empty strings skipped); a scalar is set
	// when it differs (over a list, the list goes first); an empty string or null is no
	// value at all and changes nothing; numbers and booleans become '1'/'0'-style strings.
	merge(s, cfgName, sec, values, appending) {
		const fmt = (v) => (typeof v === 'boolean' ? (v ? '1' : '0') : typeof v === 'number' ? String(v)
			: (typeof v === 'string' && v !== '') ? v : null);
		const name = sec['.name'];
		for (const [k, v] of Object.entries(values)) {
			if (Array.isArray(v)) {
				if (k in sec && !appending) { delete sec[k]; this.record(s, cfgName, ['remove', name, k]); }
				for (const item of v) {
					const f = fmt(item);
					if (f == null) continue;
					sec[k] = (Array.isArray(sec[k]) ? sec[k] : sec[k] != null ? [sec[k]] : []).concat([f]);
					this.record(s, cfgName, ['list-add', name, k, f]);
				}
			} else {
				const f = fmt(v);
				if (f == null) continue;
				if (Array.isArray(sec[k])) { delete sec[k]; this.record(s, cfgName, ['remove', name, k]); }
				if (sec[k] !== f) { sec[k] = f; this.record(s, cfgName, ['set', name, k, f]); }
			}
		}
	}

	commit(s, configs) {
		for (const c of configs) {
			if (s.delta[c]) this.committed[c] = clone(s.delta[c]);
			delete s.changes[c];
			delete s.delta[c];
			this.applied.push(c);
		}
		for (const other of this.sessions.values()) for (const c of configs) if (!other.changes[c]) delete other.delta[c];
	}
}

function menuTree() {
	const menu = JSON.parse(fs.readFileSync(path.join(appDir, 'root/usr/share/luci/menu.d/luci-app-tgtun.json'), 'utf8'));
	const root = { satisfied: true, children: {
		admin: { title: 'Administration', satisfied: true, action: { type: 'firstchild' }, children: {
			status: { title: 'Status', order: 10, satisfied: true, action: { type: 'firstchild' }, children: {
				overview: { title: 'Overview', order: 1, satisfied: true, action: { type: 'view', path: 'status/index' } } } },
			services: { title: 'Services', order: 40, satisfied: true, action: { type: 'firstchild' }, children: {} },
		} },
	} };
	for (const [p, node] of Object.entries(menu)) {
		let n = root;
		for (const part of p.split('/')) n = (n.children = n.children || {})[part] = n.children[part] || {};
		Object.assign(n, clone(node), { satisfied: true });
		delete n.depends;
	}
	return root;
}

const html = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

// Starts the server on 127.0.0.1 at a free port; returns { server, base, rpcd, url(view) }.
function start(rpcd) {
	const luci = luciRoot();
	const runtime = path.join(luci, 'modules/luci-base/htdocs/luci-static');
	const theme = path.join(luci, 'themes/luci-theme-bootstrap/htdocs/luci-static');
	const roots = [path.join(appDir, 'htdocs/luci-static'), runtime, theme];
	const basePo = path.join(luci, 'modules/luci-base/po');

	const translations = (lang) => {
		const tr = {};
		const add = (po) => {
			if (!fs.existsSync(po)) return;
			for (const [id, str] of Object.entries(catalog(po))) tr[stringHash(id.trim().replace(/[ \t\n]+/g, ' '))] = str;
		};
		if (lang !== 'en') {
			add(path.join(basePo, lang, 'base.po'));
			add(path.join(appDir, 'po', lang, 'tgtun.po'));
		}
		return `window.TR=${JSON.stringify(tr)};`;
	};

	const lang = () => {
		const main = (rpcd.committed.luci || []).find((x) => x['.name'] === 'main');
		return (main && main.lang) || 'en';
	};

	const cookies = (req) => Object.fromEntries((req.headers.cookie || '').split(/;\s*/).filter(Boolean).map((c) => c.split('=')));

	const shell = (dispatch, s) => {
		const view = dispatch.join('/') === 'admin/services/tgtun' ? 'tgtun/settings' : `tgtun/${dispatch[3]}`;
		const env = {
			media: '/luci-static/bootstrap', resource: '/luci-static/resources', scriptname: '/cgi-bin/luci',
			pathinfo: '/' + dispatch.join('/'), documentroot: '/www', requestpath: dispatch, dispatchpath: dispatch,
			pollinterval: 5, ubuspath: '/ubus/', sessionid: s.sid, token: s.token,
			nodespec: { title: dispatch[3] === 'status' ? 'Status' : 'Settings', action: { type: 'view', path: view } },
			apply_rollback: 90, apply_holdoff: 1, apply_timeout: 5, apply_display: 1, rollback_token: null,
		};
		const l = lang();
		return `<!DOCTYPE html>
<html lang="${l}" data-darkmode="false">
<head>
<meta charset="utf-8">
<title>OpenWrt | tgtun</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/luci-static/bootstrap/cascade.css">
<script src="/cgi-bin/luci/admin/translations/${l}"></script>
<script src="/luci-static/resources/cbi.js"></script>
</head>
<body class="lang_${l}" data-page="${html(dispatch.join('-'))}">
<header>
<a class="brand" href="/">OpenWrt</a>
<ul class="nav" id="topmenu" style="display:none"></ul>
<div id="indicators" class="pull-right"></div>
</header>
<div id="maincontent" class="container">
<div id="tabmenu" style="display:none"></div>
<script src="/luci-static/resources/luci.js?v=test"></script>
<script>L = new LuCI(${JSON.stringify(env).replace(/\//g, '\\/')});</script>
<div id="view">
<div class="spinning">Loading view…</div>
<script>L.require('ui').then(function(ui) { ui.instantiateView('${view}'); });</script>
</div>
</div>
<footer><span>Powered by LuCI (test runtime) / OpenWrt</span><ul class="breadcrumb pull-right" id="modemenu" style="display:none"></ul></footer>
<script>L.require('menu-bootstrap')</script>
</body>
</html>`;
	};

	const loginPage = (url) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Authorization Required</title>
<link rel="stylesheet" href="/luci-static/bootstrap/cascade.css"></head><body><div id="maincontent" class="container">
<form method="post" action="${html(url)}"><h2>Authorization Required</h2>
<input name="luci_username" id="luci_username" value="root"><input name="luci_password" id="luci_password" type="password">
<button type="submit" id="login">Log in</button></form></div></body></html>`;

	const body = (req) => new Promise((resolve) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
	});

	const server = http.createServer(async (req, res) => {
		const url = new URL(req.url, 'http://localhost');
		const send = (code, type, data, headers = {}) => { res.writeHead(code, Object.assign({ 'content-type': type, 'cache-control': 'no-store' }, headers)); res.end(data); };
		try {
			if (url.pathname === '/ubus' || url.pathname === '/ubus/') {
				if (req.method !== 'POST') return send(200, 'application/json', '{}');
				let msg;
				try { msg = JSON.parse(await body(req)); } catch { return send(200, 'application/json', JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } })); }
				const out = Array.isArray(msg) ? msg.map((m) => rpcd.rpc(m)) : rpcd.rpc(msg);
				return send(200, 'application/json', JSON.stringify(out));
			}
			if (url.pathname.startsWith('/cgi-bin/luci/')) {
				const dispatch = url.pathname.slice('/cgi-bin/luci/'.length).split('/').filter(Boolean);
				const tr = /^admin\/translations\/([a-z_]+)$/.exec(dispatch.join('/'));
				if (tr) return send(200, 'text/javascript; charset=utf-8', translations(tr[1]));
				const s = rpcd.sessions.get(cookies(req).sysauth_http);
				if (!s) {
					if (req.method === 'POST' && dispatch[0] === 'admin' && dispatch.length >= 3) {
						const form = new URLSearchParams(await body(req));
						const n = rpcd.login(form.get('luci_username'), form.get('luci_password'));
						if (n) return send(302, 'text/plain', '', { location: url.pathname, 'set-cookie': `sysauth_http=${n.sid}; path=/cgi-bin/luci/; SameSite=Strict; HttpOnly` });
					}
					return send(403, 'text/html; charset=utf-8', loginPage(url.pathname), { 'x-luci-login-required': 'yes' });
				}
				const d = dispatch.join('/');
				if (d === 'admin/menu') return send(200, 'application/json', JSON.stringify(menuTree()));
				if (d.startsWith('admin/uci/') && req.method === 'POST') {
					const q = url.searchParams;
					const act = dispatch[2];
					if (act === 'revert') {
						for (const c of Object.keys(s.changes)) rpcd.callUci(s, 'revert', { config: c });
						return send(200, 'application/json', '{}');
					}
					if (act === 'apply_rollback' || act === 'apply_unchecked') {
						if (q.get('sid') !== s.sid || q.get('token') !== s.token) return send(403, 'text/plain', 'bad token');
						const r = rpcd.callUci(s, 'apply', { rollback: act === 'apply_rollback', timeout: 90 });
						if (r instanceof Status && r.code === UBUS.NO_DATA) return send(204, 'text/plain', '');
						if (r instanceof Status) return send(500, 'text/plain', `uci apply failed with ubus code ${r.code}`);
						if (act === 'apply_unchecked') return send(204, 'text/plain', '');
						rpcd.pending.token = crypto.randomBytes(16).toString('hex');
						return send(200, 'application/json', JSON.stringify({ token: rpcd.pending.token }));
					}
					if (act === 'confirm') {
						if (!rpcd.pending || q.get('token') !== rpcd.pending.token) return send(403, 'text/plain', 'no pending apply for this token');
						rpcd.callUci(s, 'confirm', {});
						return send(204, 'text/plain', '');
					}
				}
				if (dispatch[0] === 'admin' && dispatch[1] === 'services' && dispatch[2] === 'tgtun' && (dispatch.length === 3 || ['settings', 'status'].includes(dispatch[3])))
					return send(200, 'text/html; charset=utf-8', shell(dispatch.length === 3 ? dispatch.concat('settings') : dispatch, s));
				return send(404, 'text/plain', 'no page here');
			}
			if (url.pathname.startsWith('/luci-static/')) {
				const rel = decodeURIComponent(url.pathname.slice('/luci-static/'.length));
				for (const root of roots) {
					const f = path.resolve(root, rel);
					if (f.startsWith(root + path.sep) && fs.existsSync(f) && fs.statSync(f).isFile())
						return send(200, TYPES[path.extname(f)] || 'application/octet-stream', fs.readFileSync(f));
				}
			}
			return send(404, 'text/plain', 'not found');
		} catch (e) {
			send(500, 'text/plain', String(e && e.stack || e));
		}
	});
	return new Promise((resolve, reject) => {
		server.once('error', reject);
		server.listen(0, '127.0.0.1', () => {
			const base = `http://127.0.0.1:${server.address().port}`;
			resolve({ server, base, rpcd, url: (view) => `${base}/cgi-bin/luci/admin/services/${view}` });
		});
	});
}

module.exports = { Rpcd, Status, UBUS, start, stringHash };
