'use strict';
// The form's "Paste link" parser (settings.js parseLink) and `tgtun proxy import`
// (daemon/links) must read a share link the same way. Both test suites read the one
// fixture, fixtures/links.json: per link the UCI options it gives, or the parts the
// error must name. daemon/links/parity_test.go holds the daemon to it; this test the
// form. A link the parser takes is then judged by the form's checks of the filled
// fields, as the daemon's side goes through `config check`.
// The view loads under the stand-in (harness/luci-stub.js), as in validate.test.js.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { loadView } = require('./lib/load-view');

const view = loadView('tgtun/settings');
const fixture = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'links.json'), 'utf8'));
const FIELDS = [ 'type', 'server', 'port', 'username', 'password', 'cipher', 'uuid', 'flow', 'security',
	'sni', 'fingerprint', 'public_key', 'short_id', 'alpn', 'insecure', 'pinned_sha256',
	'transport', 'path', 'host', 'service_name', 'mode', 'early_data', 'padding_bytes', 'extra' ];

// The link as the form fills it: the options it sets (empty ones, insecure '0' and an
// empty alpn are not set) and the parameters it reports as not used (sorted), or
// { error } with the parser's or a field check's message.
function paste(link) {
	let out;
	try {
		out = view.parseLink(link);
	} catch (e) {
		assert.equal(typeof e.message, 'string', `${link}: threw ${e}`);
		assert.ok(!(e instanceof Error), `${link}: a JavaScript exception, not the parser's error: ${e.stack}`);
		return { error: e.message };
	}
	const c = view.checks;
	const cred = c.credentials(out.type, out.server, out.cipher, out.type === 'shadowsocks' ? '' : out.username, out.password);
	const errs = [ cred.username, cred.password, out.sni && c.sni(out.sni), ...out.pinned_sha256.map(c.pinned_sha256),
		out.transport && c.transport(out.transport, out.flow), out.path && c.path(out.path), out.host && c.host(out.host),
		out.service_name && c.service_name(out.service_name), out.mode && c.mode(out.mode, out.transport),
		out.early_data && c.early_data(out.early_data), out.padding_bytes && c.padding_bytes(out.padding_bytes),
		out.extra && c.extra(out.extra) ].filter(Boolean);
	if (errs.length)
		return { error: errs.join('; ') };
	const opts = {};
	for (const k of FIELDS) {
		const v = out[k];
		if (Array.isArray(v) ? v.length : (v !== '' && v != null && !(k === 'insecure' && v === '0')))
			opts[k] = Array.isArray(v) ? [...v] : v;
	}
	for (const i of out.ignored)
		assert.ok(i.param && i.reason, `${link}: a note without parameter or reason`);
	return { options: opts, ignored: out.ignored.map((i) => i.param).sort() };
}

test('fixture holds good and bad links', () => {
	assert.ok(fixture.links.some((c) => c.options) && fixture.links.some((c) => c.error));
	for (const c of fixture.links)
		assert.ok(!c.options !== !c.error, `${c.link}: the fixture must give either options or error`);
});

for (const c of fixture.links) {
	test(c.link, () => {
		const got = paste(c.link);
		if (c.options) {
			assert.deepEqual(got, { options: c.options, ignored: c.ignored || [] });
			return;
		}
		assert.ok(got.error, `parsed to ${JSON.stringify(got.options)}; want an error naming ${JSON.stringify(c.error)}`);
		for (const part of c.error)
			assert.ok(got.error.includes(part), `error ${JSON.stringify(got.error)} does not contain ${JSON.stringify(part)}`);
	});
}
