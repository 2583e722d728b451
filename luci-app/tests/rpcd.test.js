'use strict';
// The test server answers as rpcd behind uhttpd does (lib/rpcd.js): these cases pin the
// behaviour the view tests rely on, as openwrt/rpcd's uci.c and uhttpd's ubus.c have it.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Rpcd } = require('./lib/rpcd');
const fx = require('./lib/fixtures');

function setup(objects = {}) {
	const r = new Rpcd({ configs: { tgtun: fx.shippedConfig() }, objects });
	let id = 0;
	const raw = (params, method = 'call') => r.rpc({ jsonrpc: '2.0', id: ++id, method, params });
	const login = raw(['00000000000000000000000000000000', 'session', 'login', { username: 'root', password: 'secret' }]);
	const sid = login.result[1].ubus_rpc_session;
	const call = (object, method, args) => raw([sid, object, method, args]);
	return { r, raw, sid, call };
}

test('login: a wrong password is ubus status 6; the anonymous session may not read uci', () => {
	const { raw } = setup();
	assert.deepEqual(raw(['00000000000000000000000000000000', 'session', 'login', { username: 'root', password: 'x' }]).result, [6]);
	assert.deepEqual(raw(['00000000000000000000000000000000', 'uci', 'get', { config: 'tgtun' }]).error, { code: -32002, message: 'Access denied' });
});

test('uhttpd errors: access denied before object lookup, then object not found; method not found is ubus status 3', () => {
	const { r, call, raw } = setup({ tgtun: fx.tgtunObject() });
	assert.deepEqual(call('tgtun', 'status', {}).result[0], 0);
	assert.deepEqual(call('tgtun', 'nosuch', {}).error, { code: -32002, message: 'Access denied' });
	r.reset({ configs: { tgtun: fx.shippedConfig() }, objects: {} });
	assert.deepEqual(call('tgtun', 'status', {}).error, { code: -32000, message: 'Object not found' });
	r.objects.tgtun = { status: {} };
	r.acl['luci-app-tgtun'].read.ubus.tgtun.push('nosuch');
	assert.deepEqual(call('tgtun', 'nosuch', {}).result, [3]);
	assert.deepEqual(raw(['x', 'uci']).error.code, -32602);
	assert.deepEqual(raw('nonsense', 'frobnicate').error.code, -32601);
});

test('uci add with the name of an existing section retypes it, keeping its options', () => {
	const { call } = setup();
	assert.deepEqual(call('uci', 'add', { config: 'tgtun', type: 'proxy', name: 'main', values: { server: '198.51.100.9' } }).result, [0, { section: 'main' }]);
	const main = call('uci', 'get', { config: 'tgtun', section: 'main' }).result[1].values;
	assert.equal(main['.type'], 'proxy');
	assert.equal(main.tun_name, 'tgtun0');
	assert.equal(main.server, '198.51.100.9');
});

test('uci set: changes only what differs, an empty string changes nothing, arrays replace lists', () => {
	const { call } = setup();
	assert.deepEqual(call('uci', 'set', { config: 'tgtun', section: 'main', values: { fail_mode: 'block', tun_name: '', lan_iface: ['br-lan', 'br-guest'], enabled: true } }).result, [0]);
	assert.deepEqual(call('uci', 'changes', { config: 'tgtun' }).result[1].changes, { tgtun: [
		['remove', 'main', 'lan_iface'], ['list-add', 'main', 'lan_iface', 'br-lan'], ['list-add', 'main', 'lan_iface', 'br-guest'],
		['set', 'main', 'enabled', '1']] });
	assert.deepEqual(call('uci', 'set', { config: 'tgtun', section: 'nosuch', values: { a: 'b' } }).result, [4]);
});

test('uci apply with rollback: commits, then revert/commit wait for the confirm; nothing to apply is status 5', () => {
	const { r, call } = setup();
	assert.deepEqual(call('uci', 'apply', { rollback: true, timeout: 90 }).result, [5]);
	call('uci', 'set', { config: 'tgtun', section: 'main', values: { fail_mode: 'direct' } });
	assert.equal(r.committed.tgtun[0].fail_mode, 'block');
	assert.deepEqual(call('uci', 'apply', { rollback: true, timeout: 90 }).result, [0]);
	assert.equal(r.committed.tgtun[0].fail_mode, 'direct');
	assert.deepEqual(call('uci', 'commit', { config: 'tgtun' }).result, [6]);
	assert.deepEqual(call('uci', 'confirm', {}).result, [0]);
	assert.deepEqual(call('uci', 'confirm', {}).result, [5]);
});
