'use strict';
// LuCI's dispatcher (/cgi-bin/luci), run by the real uhttpd as a CGI program, for the
// browser tests. On a router this is LuCI's server side in ucode (dispatcher.uc,
// controller/admin/uci.uc, the templates), which ../shared/luci does not hold; this is a
// stand-in for it alone. Everything it does with sessions and uci goes to the real rpcd
// on the real ubusd, with the `ubus` CLI, as root, as LuCI's server side does:
//
// - the login form: `session login` (rpcd checks the crypt()ed password of a login
//   section in /etc/config/rpcd), then `session set` of the CSRF token, and the
//   sysauth_http cookie; every page checks its session with `session get`;
// - the page shell around a view, as header.ut/view.ut/footer.ut render it
//   (`L = new LuCI({...})`, `ui.instantiateView`), with the apply timings of
//   /etc/config/luci; a pending rollback of this session is confirmed by the page
//   (footer.ut's rollback_pending);
// - the pages and admin/menu from the app's menu.d with its `depends`: a page needs a
//   section in /etc/config/tgtun (else 404) and the ACL group luci-app-tgtun in the
//   session's access lists (`session access`): without it 403, with read alone a
//   read-only view;
// - admin/translations/LANG: window.TR from the app's .po and LuCI's base.po, keyed by
//   LuCI's string hash, for the language of /etc/config/luci;
// - admin/uci/apply_rollback, apply_unchecked, confirm and revert, as uci.uc: `uci apply`
//   with rollback and the rollback token in the default session, `uci confirm` of that
//   session, `uci changes`/`commit`/`revert`.
//
// Two deviations, for the tests: the rollback window is luci.apply.rollback as set, where
// LuCI holds it at 90 s at least; and while the file `block-confirm` exists in the state
// directory, confirm answers 503, as if the browser could not reach the router after the
// apply (so rpcd rolls back).
//
// uhttpd runs it as `#!node` script that calls main(CONFIG) (router.js writes both).
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');

const NOSID = '00000000000000000000000000000000';

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

// uci.uc's ubus_error_map: a ubus status as an HTTP status and text.
const HTTP_OF_UBUS = [[200, 'OK'], [400, 'Invalid command'], [400, 'Invalid argument'], [404, 'Method not found'],
	[404, 'Not found'], [204, 'No data'], [403, 'Permission denied'], [504, 'Timeout'], [500, 'Not supported'],
	[500, 'Unknown error'], [503, 'Connection failed'], [500, 'Out of memory'], [400, 'Parse error'], [500, 'System error']];

const html = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

class Dispatcher {
	constructor(conf, env, body) {
		this.conf = conf;
		this.env = env;
		this.body = body;
		this.i18n = require(path.join(conf.appDir, 'tests/lib/i18n.js'));
		this.uciText = require(path.join(conf.appDir, 'tests/lib/uci-text.js'));
	}

	// `ubus call` as root: [status, data].
	ubus(object, method, args = {}) {
		const u = this.conf.ubus;
		const r = spawnSync(u.cli, ['-s', u.socket, 'call', object, method, JSON.stringify(args)],
			{ encoding: 'utf8', env: { LD_LIBRARY_PATH: u.libdir }, timeout: 30000 });
		if (r.error) throw new Error(`ubus call ${object} ${method}: ${r.error.message}`);
		if (r.status !== 0) return [r.status, null];
		return [0, r.stdout.trim() ? JSON.parse(r.stdout) : null];
	}

	// The router's /etc/config/NAME as sections, as libuci reads it for LuCI's server side.
	config(name) {
		const f = path.join(this.conf.configDir, name);
		return fs.existsSync(f) ? this.uciText.parse(fs.readFileSync(f, 'utf8')) : null;
	}

	luciOption(section, option, dflt) {
		const s = (this.config('luci') || []).find((x) => x['.name'] === section);
		return s && s[option] != null ? s[option] : dflt;
	}

	cookies() {
		return Object.fromEntries((this.env.HTTP_COOKIE || '').split(/;\s*/).filter(Boolean).map((c) => {
			const i = c.indexOf('=');
			return [c.slice(0, i), c.slice(i + 1)];
		}));
	}

	query() { return new URLSearchParams(this.env.QUERY_STRING || ''); }

	// The session of sid with its values and access lists, or null (session_retrieve).
	session(sid) {
		if (!sid || !/^[0-9a-f]{32}$/.test(sid) || sid === NOSID) return null;
		const [st, res] = this.ubus('session', 'get', { ubus_rpc_session: sid });
		if (st !== 0 || !res || !res.values || typeof res.values.token !== 'string') return null;
		const [ast, acls] = this.ubus('session', 'access', { ubus_rpc_session: sid });
		return { sid, username: res.values.username, token: res.values.token, acls: ast === 0 && acls ? acls : {} };
	}

	// LuCI's check_acl_depends: null when the session lacks one of the groups, else true
	// when it may write one of them (false: read-only).
	aclDepends(groups, s) {
		let writable = false;
		for (const g of groups || []) {
			const perms = (s.acls['access-group'] || {})[g] || [];
			if (!perms.includes('read') && !perms.includes('write')) return null;
			if (perms.includes('write')) writable = true;
		}
		return groups && groups.length ? writable : true;
	}

	// A `depends: { uci: { config: true } }` holds when the config has a section.
	uciDepends(dep) {
		for (const config of Object.keys((dep && dep.uci) || {})) {
			const c = this.config(config);
			if (!c || c.length === 0) return false;
		}
		return true;
	}

	// The app's menu.d nodes on the way to a page: [path, node] from the top.
	menuNodes(dispatch) {
		const menu = JSON.parse(fs.readFileSync(path.join(this.conf.appDir, 'root/usr/share/luci/menu.d/luci-app-tgtun.json'), 'utf8'));
		const out = [];
		for (let i = 1; i <= dispatch.length; i++) {
			const p = dispatch.slice(0, i).join('/');
			if (menu[p]) out.push([p, menu[p]]);
		}
		return out;
	}

	login(username, password) {
		const [st, res] = this.ubus('session', 'login', { username, password, timeout: 3600 });
		if (st !== 0) return null;
		const sid = res.ubus_rpc_session;
		const token = crypto.randomBytes(16).toString('hex');
		this.ubus('session', 'set', { ubus_rpc_session: sid, values: { token } });
		return { sid, username, token };
	}

	handle() {
		const dispatch = (this.env.PATH_INFO || '/').split('/').filter(Boolean);
		const d = dispatch.join('/');
		const tr = /^admin\/translations\/([a-z_]+)$/.exec(d);
		if (tr) return this.send(200, 'text/javascript; charset=utf-8', this.translations(tr[1]));
		if (d === 'admin/uci/confirm') return this.confirm();
		if (d === 'admin/uci/apply_rollback' || d === 'admin/uci/apply_unchecked') return this.apply(dispatch[2] === 'apply_rollback');

		const s = this.session(this.cookies().sysauth_http);
		if (!s) {
			if (this.env.REQUEST_METHOD === 'POST' && dispatch[0] === 'admin') {
				const form = new URLSearchParams(this.body);
				const n = form.get('luci_username') != null && this.login(form.get('luci_username'), form.get('luci_password') || '');
				if (n) {
					return this.send(302, 'text/plain', '', {
						Location: (this.env.SCRIPT_NAME || '/cgi-bin/luci') + (this.env.PATH_INFO || ''),
						'Set-Cookie': `sysauth_http=${n.sid}; path=/cgi-bin/luci/; SameSite=strict; HttpOnly`,
					});
				}
				return this.send(403, 'text/html; charset=utf-8', this.loginPage(form.get('luci_username')), { 'X-LuCI-Login-Required': 'yes' });
			}
			return this.send(403, 'text/html; charset=utf-8', this.loginPage(null), { 'X-LuCI-Login-Required': 'yes' });
		}
		if (d === 'admin/menu') return this.send(200, 'application/json', JSON.stringify(this.menu(s)));
		if (d === 'admin/uci/revert' && this.env.REQUEST_METHOD === 'POST') return this.revert(s);
		const page = dispatch.length === 3 ? dispatch.concat('settings') : dispatch;
		const nodes = this.menuNodes(page);
		if (dispatch[0] === 'admin' && dispatch[1] === 'services' && dispatch[2] === 'tgtun' && ['settings', 'status'].includes(page[3])
			&& nodes.every(([, n]) => this.uciDepends(n.depends))) {
			// As LuCI's dispatcher: a session without the page's ACL groups gets 403, one
			// that may only read them a read-only view.
			const perm = this.aclDepends(nodes.flatMap(([, n]) => (n.depends && n.depends.acl) || []), s);
			if (perm == null) return this.send(403, 'text/plain', '');
			return this.send(200, 'text/html; charset=utf-8', this.shell(page, s, !perm));
		}
		return this.send(404, 'text/plain', `No page is registered at '/${d}'.`);
	}

	send(code, type, body, headers = {}) {
		const reason = { 200: 'OK', 204: 'No Content', 302: 'Found', 403: 'Forbidden', 404: 'Not Found', 503: 'Service Unavailable' }[code] || 'Status';
		let out = `Status: ${code} ${reason}\r\nContent-Type: ${type}\r\nCache-Control: no-store\r\n`;
		for (const [k, v] of Object.entries(headers)) out += `${k}: ${v}\r\n`;
		process.stdout.write(out + '\r\n');
		if (body) process.stdout.write(body);
	}

	ubusStateToHttp(st) {
		const [code, msg] = HTTP_OF_UBUS[st] || [500, 'Unknown error'];
		return this.send(code, 'text/plain', code === 204 ? '' : msg);
	}

	// POST admin/uci/apply_*: authenticated by the sid and CSRF token in the query.
	apply(rollback) {
		const q = this.query();
		const s = this.session(q.get('sid'));
		if (!s || q.get('token') !== s.token) return this.send(403, 'text/plain', 'Form token mismatch');
		if (rollback) {
			const timeout = +this.luciOption('apply', 'rollback', 90) || 90;
			const [st] = this.ubus('uci', 'apply', { ubus_rpc_session: s.sid, timeout, rollback: true });
			if (st !== 0) return this.ubusStateToHttp(st);
			const token = crypto.randomBytes(16).toString('hex');
			this.ubus('session', 'set', { ubus_rpc_session: NOSID, values: { rollback: { token, session: s.sid, timeout: Math.floor(Date.now() / 1000) + timeout } } });
			return this.send(200, 'application/json; charset=UTF-8', JSON.stringify({ token }));
		}
		const [cst, ch] = this.ubus('uci', 'changes', { ubus_rpc_session: s.sid });
		if (cst !== 0) return this.ubusStateToHttp(cst);
		for (const config of Object.keys((ch && ch.changes) || {})) {
			const [st] = this.ubus('uci', 'commit', { ubus_rpc_session: s.sid, config });
			if (st !== 0) return this.ubusStateToHttp(st);
		}
		const [st] = this.ubus('uci', 'apply', { ubus_rpc_session: s.sid, rollback: false });
		return this.ubusStateToHttp(st);
	}

	rollbackData() {
		const [st, res] = this.ubus('session', 'get', { ubus_rpc_session: NOSID, keys: ['rollback'] });
		const data = st === 0 && res && res.values && res.values.rollback;
		if (!data || typeof data.token !== 'string' || typeof data.session !== 'string' || typeof data.timeout !== 'number'
			|| data.timeout < Math.floor(Date.now() / 1000)) return null;
		return data;
	}

	// admin/uci/confirm: no login, the rollback token.
	confirm() {
		const data = this.rollbackData();
		if (!data) return this.ubusStateToHttp(5);
		if (fs.existsSync(path.join(this.conf.stateDir, 'block-confirm'))) return this.send(503, 'text/plain', 'router unreachable (test)');
		if (this.query().get('token') !== data.token) return this.ubusStateToHttp(6);
		const [st] = this.ubus('uci', 'confirm', { ubus_rpc_session: data.session });
		if (st !== 0) return this.ubusStateToHttp(st);
		this.ubus('session', 'set', { ubus_rpc_session: NOSID, values: { rollback: {} } });
		return this.ubusStateToHttp(0);
	}

	revert(s) {
		const q = this.query();
		if (q.get('token') !== s.token) return this.send(403, 'text/plain', 'Form token mismatch');
		const [cst, ch] = this.ubus('uci', 'changes', { ubus_rpc_session: s.sid });
		if (cst !== 0) return this.ubusStateToHttp(cst);
		for (const config of Object.keys((ch && ch.changes) || {})) {
			const [st] = this.ubus('uci', 'revert', { ubus_rpc_session: s.sid, config });
			if (st !== 0) return this.ubusStateToHttp(st);
		}
		return this.ubusStateToHttp(0);
	}

	translations(lang) {
		const tr = {};
		const add = (po) => {
			if (!fs.existsSync(po)) return;
			for (const [id, str] of Object.entries(this.i18n.catalog(po))) tr[stringHash(id.trim().replace(/[ \t\n]+/g, ' '))] = str;
		};
		if (lang !== 'en') {
			add(path.join(this.conf.luciRoot, 'modules/luci-base/po', lang, 'base.po'));
			add(path.join(this.conf.appDir, 'po', lang, 'tgtun.po'));
		}
		return `window.TR=${JSON.stringify(tr)};`;
	}

	// The menu of the app's menu.d, each node kept only where its depends hold.
	menu(s) {
		const menu = JSON.parse(fs.readFileSync(path.join(this.conf.appDir, 'root/usr/share/luci/menu.d/luci-app-tgtun.json'), 'utf8'));
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
			Object.assign(n, JSON.parse(JSON.stringify(node)), { satisfied: this.uciDepends(node.depends) });
			const perm = this.aclDepends(node.depends && node.depends.acl, s);
			if (perm == null) n.satisfied = false; else if (perm === false) n.readonly = true;
		}
		return root;
	}

	lang() { return this.luciOption('main', 'lang', 'en'); }

	shell(dispatch, s, readonly) {
		const view = `tgtun/${dispatch[3]}`;
		const num = (opt, dflt, min) => Math.max(+this.luciOption('apply', opt, dflt) || dflt, min);
		const rollback = this.rollbackData();
		const env = {
			media: '/luci-static/bootstrap', resource: '/luci-static/resources', scriptname: this.env.SCRIPT_NAME || '/cgi-bin/luci',
			pathinfo: '/' + dispatch.join('/'), documentroot: this.env.DOCUMENT_ROOT, requestpath: dispatch, dispatchpath: dispatch,
			pollinterval: 5, ubuspath: '/ubus/', sessionid: s.sid, token: s.token,
			nodespec: { title: dispatch[3] === 'status' ? 'Status' : 'Settings', action: { type: 'view', path: view }, readonly: !!readonly, satisfied: true },
			// LuCI holds the rollback window at 90 s at least; the tests set a shorter one.
			apply_rollback: +this.luciOption('apply', 'rollback', 90) || 90,
			apply_holdoff: num('holdoff', 4, 1), apply_timeout: num('timeout', 5, 1), apply_display: num('display', 1.5, 1),
			rollback_token: rollback && rollback.session === s.sid ? rollback.token : null,
		};
		const l = this.lang();
		const pending = rollback && rollback.session === s.sid
			? `<script>document.addEventListener("luci-loaded", function() { L.ui.changes.confirm(true, Date.now() + ${(rollback.timeout - Math.floor(Date.now() / 1000)) * 1000}, ${JSON.stringify(rollback.token)}); });</script>`
			: '';
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
${pending}
<footer><span>Powered by LuCI (test dispatcher) / OpenWrt</span><ul class="breadcrumb pull-right" id="modemenu" style="display:none"></ul></footer>
<script>L.require('menu-bootstrap')</script>
</body>
</html>`;
	}

	loginPage(user) {
		return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Authorization Required</title>
<link rel="stylesheet" href="/luci-static/bootstrap/cascade.css"></head><body><div id="maincontent" class="container">
<form method="post">${user != null ? '<div class="alert-message warning"><p>Invalid username and/or password! Please try again.</p></div>' : ''}
<h2>Authorization Required</h2>
<input name="luci_username" id="luci_username" value="${html(user || 'root')}"><input name="luci_password" id="luci_password" type="password">
<button type="submit" id="login">Log in</button></form></div></body></html>`;
	}
}

// The CGI program: the request from the environment and stdin, the answer to stdout.
function main(confPath) {
	const conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
	const len = +(process.env.CONTENT_LENGTH || 0);
	let body = '';
	if (len > 0) {
		const buf = Buffer.alloc(len);
		let got = 0;
		while (got < len) {
			const n = fs.readSync(0, buf, got, len - got, null);
			if (n <= 0) break;
			got += n;
		}
		body = buf.subarray(0, got).toString('utf8');
	}
	try {
		new Dispatcher(conf, process.env, body).handle();
	} catch (e) {
		process.stdout.write(`Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n${e && e.stack || e}`);
	}
}

module.exports = { main, stringHash };
