'use strict';
'require view';
'require form';
'require uci';
'require ui';
'require tools.widgets as widgets';
'require rpc';

/*
 * Settings of tgtun (/etc/config/tgtun).
 *
 * The checks below give the same verdicts and the same words as `tgtun config check`
 * (daemon/config), so a value the form accepts is one the daemon accepts, and an error
 * reads the same in the browser and in the log. tests/validate.test.js compares them
 * with the real command.
 */

// The daemon's built-in catalogue (daemon/lists): a service it does not know is ignored
// with a warning, so the form offers exactly these.
var SERVICES = [
	[ 'telegram', 'Telegram' ],
	[ 'whatsapp', 'WhatsApp' ],
	[ 'signal', 'Signal' ],
	[ 'discord', 'Discord' ],
	[ 'viber', 'Viber' ]
];

var SS_CIPHERS = [ 'aes-128-gcm', 'aes-256-gcm', 'chacha20-ietf-poly1305',
	'2022-blake3-aes-128-gcm', '2022-blake3-aes-256-gcm', '2022-blake3-chacha20-poly1305' ];

/* Key length in bytes of the Shadowsocks 2022 ciphers (the PSK in option password, base64). */
var SS2022_KEYS = { '2022-blake3-aes-128-gcm': 16, '2022-blake3-aes-256-gcm': 32, '2022-blake3-chacha20-poly1305': 32 };

/* TLS ClientHello fingerprints (uTLS) of vless and trojan proxies. */
var FINGERPRINTS = [ 'chrome', 'firefox', 'safari', 'ios', 'edge', 'android', '360', 'qq', 'random', 'randomized' ];

/* Transports under vless and trojan, and their modes (daemon/config/transport.go). */
var TRANSPORTS = [ 'tcp', 'ws', 'httpupgrade', 'grpc', 'xhttp' ];
var TRANSPORT_MODES = { grpc: [ 'gun', 'multi' ], xhttp: [ 'auto', 'packet-up', 'stream-up', 'stream-one' ] };

/* XHTTP extra's fields: used, ignored (with why) and refused by name; any other is refused
 * (daemon/proxy/transport/extra.go, daemon/links). */
var EXTRA_USED = [ 'headers', 'xPaddingBytes', 'xPaddingObfsMode', 'xPaddingKey', 'xPaddingHeader',
	'xPaddingPlacement', 'xPaddingMethod', 'uplinkHTTPMethod', 'sessionPlacement', 'sessionKey',
	'sessionIDPlacement', 'sessionIDKey', 'seqPlacement', 'seqKey', 'uplinkDataPlacement', 'uplinkDataKey',
	'uplinkChunkSize', 'noGRPCHeader', 'scMaxEachPostBytes', 'scMinPostsIntervalMs', 'xmux', 'host', 'path', 'mode' ];
var EXTRA_IGNORED = {
	noSSEHeader: 'a server setting', scMaxBufferedPosts: 'a server setting', scStreamUpServerSecs: 'a server setting',
	serverMaxHeaderBytes: 'a server setting', scMaxConcurrentPosts: 'removed from Xray-core',
	keepAlivePeriod: 'not an Xray-core setting (xmux.hKeepAlivePeriod is)'
};
var XMUX_FIELDS = [ 'maxConcurrency', 'maxConnections', 'cMaxReuseTimes', 'hMaxRequestTimes', 'hMaxReusableSecs', 'hKeepAlivePeriod' ];

/* Proxy types: [ value, label, carries UDP, has server/port ]. */
var PROXY_TYPES = [
	[ 'socks5', 'SOCKS5', true, true ],
	[ 'http', 'HTTP CONNECT', false, true ],
	[ 'shadowsocks', 'Shadowsocks', true, true ],
	[ 'vless', 'VLESS', true, true ],
	[ 'trojan', 'Trojan', true, true ],
	[ 'interface', _('Interface (WireGuard, AmneziaWG…)'), true, false ]
];

function proxyType(type) {
	return PROXY_TYPES.filter(function(t) { return t[0] == type })[0] || PROXY_TYPES[0];
}

var DEFAULT_FWMASK = 0x100000, DEFAULT_BYPASS = 0x200000;
var MAX_INT64 = 9223372036854775807n;

/* --- value parsers: each returns a value, or throws a phrase completing "NAME 'VALUE' is ..." --- */

function Bad(phrase) { this.phrase = phrase; }

function byteLength(s) {
	return new TextEncoder().encode(s).length;
}

/* 'value' as the daemon quotes a user's value in its messages. */
function quoteValue(v) {
	var s = String(v), cut = s.length > 80;
	if (cut)
		s = s.substring(0, 80);
	var q = /^[^\x00-\x1f\x7f-\x9f']*$/.test(s) ? "'" + s + "'" : JSON.stringify(s);
	return cut ? q + '…' : q;
}

function parseRange(s, lo, hi, phrase) {
	if (!/^[+-]?[0-9]+$/.test(s))
		throw new Bad(_('not a number (%d-%d)').format(lo, hi));
	var n = BigInt(s);
	if (n >= BigInt(lo) && n <= BigInt(hi))
		return Number(n);
	throw new Bad(phrase || _('out of range %d-%d').format(lo, hi));
}

function parseBool(s) {
	switch (String(s).toLowerCase()) {
	case '1': case 'on': case 'true': case 'yes': case 'enabled': return true;
	case '0': case 'off': case 'false': case 'no': case 'disabled': return false;
	}
	throw new Bad(_("not a boolean (allowed: '1' or '0')"));
}

function parseIfname(s) {
	if (s == '' || byteLength(s) > 15)
		throw new Bad(_('not a valid interface name (1-15 characters)'));
	if (s == '.' || s == '..')
		throw new Bad(_('not a valid interface name'));
	if (/[\x00-\x20\/:]|[^\x00-\x7e]/.test(s))
		throw new Bad(_("not a valid interface name (no '/', ':', spaces or non-ASCII)"));
	return s;
}

function parseUint32(s) {
	var l = String(s).toLowerCase(), n = null;
	if (l.indexOf('0x') == 0) {
		if (/^[0-9a-f]+$/.test(l.substring(2)))
			n = BigInt('0x' + l.substring(2));
	}
	else if (/^[0-9]+$/.test(l)) {
		n = BigInt(l);
	}
	if (n == null || n > 0xffffffffn)
		throw new Bad(_('not a 32-bit number (hexadecimal 0x… or decimal)'));
	return Number(n);
}

/* VALUE or VALUE/MASK; returns [ mark, mask ]. */
function parseFwmark(s) {
	var i = s.indexOf('/'), mark = parseUint32(i < 0 ? s : s.substring(0, i)), mask = mark;
	if (i >= 0) {
		try { mask = parseUint32(s.substring(i + 1)); }
		catch (e) { throw new Bad(_('mask not a 32-bit number (hexadecimal 0x… or decimal)')); }
	}
	if (mark == 0)
		throw new Bad(_('zero (the mark must have at least one bit set)'));
	if (((mark & ~mask) >>> 0) != 0)
		throw new Bad(_('not inside its mask (VALUE/MASK needs VALUE & ~MASK == 0)'));
	return [ mark, mask ];
}

var GO_UNITS = { 'ns': 1, 'us': 1e3, '\u00b5s': 1e3, '\u03bcs': 1e3, 'ms': 1e6, 's': 1e9, 'm': 60e9, 'h': 3600e9 };

/* Go's time.ParseDuration, in nanoseconds; null when it is not one. */
function goDuration(s) {
	var neg = false;
	if (s.charAt(0) == '-' || s.charAt(0) == '+') {
		neg = s.charAt(0) == '-';
		s = s.substring(1);
	}
	if (s == '0')
		return 0;
	if (s == '')
		return null;
	var total = 0, m;
	while (s != '') {
		m = /^([0-9]*)(?:\.([0-9]*))?([^0-9.]*)/.exec(s);
		if (!m || (m[1] == '' && (m[2] == null || m[2] == '')) || !GO_UNITS.hasOwnProperty(m[3]))
			return null;
		total += parseFloat((m[1] || '0') + '.' + (m[2] || '0')) * GO_UNITS[m[3]];
		s = s.substring(m[0].length);
	}
	if (total > 9223372036854775807)
		return null;
	return neg ? -total : total;
}

/* A duration as the daemon reads it: Go duration, days ("7d") or plain seconds; ns. */
function parseDuration(s) {
	var bad = new Bad(_("not a duration (e.g. '10s', '30m', '24h', '7d' or plain seconds)"));
	if (s == '')
		throw bad;
	if (/^[+-]?[0-9]+$/.test(s)) {
		var n = BigInt(s);
		if (n < 0n || n > MAX_INT64 / 1000000000n)
			throw bad;
		return Number(n) * 1e9;
	}
	if (s.charAt(s.length - 1) == 'd') {
		var days = s.substring(0, s.length - 1);
		if (!/^[+-]?[0-9]+$/.test(days) || BigInt(days) < 0n || BigInt(days) > MAX_INT64 / 86400000000000n)
			throw bad;
		return Number(days) * 86400e9;
	}
	var d = goDuration(s);
	if (d == null || d < 0)
		throw bad;
	return d;
}

function checkDuration(s, min, max, minText, maxText, zeroOK) {
	var d = parseDuration(s);
	if (d == 0 && zeroOK)
		return d;
	if (d < min || d > max)
		throw new Bad(zeroOK ? _('out of range %s-%s, or 0 to disable').format(minText, maxText)
			: _('out of range %s-%s').format(minText, maxText));
	return d;
}

function parseSize(s) {
	var bad = new Bad(_("not a size (e.g. '32M', '512K', '1G', bytes, or '0'/'off' for none)"));
	if (s == '0' || s == 'off')
		return 0;
	var m = /^([0-9]+)(.*)$/.exec(s), unit;
	if (!m)
		throw bad;
	switch (m[2]) {
	case '': case 'B': case 'b': unit = 1n; break;
	case 'K': case 'k': case 'KB': case 'kB': case 'KiB': unit = 1024n; break;
	case 'M': case 'm': case 'MB': case 'MiB': unit = 1048576n; break;
	case 'G': case 'g': case 'GB': case 'GiB': unit = 1073741824n; break;
	default: throw bad;
	}
	if (BigInt(m[1]) > MAX_INT64 / unit)
		throw bad;
	return Number(BigInt(m[1]) * unit);
}

/* Go's netip.ParseAddr: { v4: bool, words: 8 uint16 (v6) or 4 octets, zone }, or null. */
function parseAddr(s) {
	var i = s.search(/[.:%]/);
	if (i < 0 || s.charAt(i) == '%')
		return null;
	if (s.charAt(i) == '.') {
		var o = parseIPv4(s);
		return o ? { v4: true, bytes: o, zone: '' } : null;
	}
	return parseIPv6(s);
}

function parseIPv4(s) {
	var parts = s.split('.');
	if (parts.length != 4)
		return null;
	var out = [];
	for (var i = 0; i < 4; i++) {
		if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i]) || +parts[i] > 255)
			return null;
		out.push(+parts[i]);
	}
	return out;
}

function parseIPv6(s) {
	var zone = '', z = s.indexOf('%');
	if (z >= 0) {
		zone = s.substring(z + 1);
		s = s.substring(0, z);
		if (zone == '')
			return null;
	}
	var halves = s.split('::');
	if (halves.length > 2)
		return null;
	var groups = function(h) {
		if (h == '')
			return [];
		var out = [], parts = h.split(':');
		for (var i = 0; i < parts.length; i++) {
			if (i == parts.length - 1 && parts[i].indexOf('.') >= 0) {
				var v4 = parseIPv4(parts[i]);
				if (!v4)
					return null;
				out.push(v4[0] << 8 | v4[1], v4[2] << 8 | v4[3]);
			}
			else if (/^[0-9a-fA-F]{1,4}$/.test(parts[i])) {
				out.push(parseInt(parts[i], 16));
			}
			else {
				return null;
			}
		}
		return out;
	};
	var head = groups(halves[0]), tail = halves.length == 2 ? groups(halves[1]) : [];
	if (!head || !tail)
		return null;
	if (halves[0].indexOf('.') >= 0 && halves.length == 2)
		return null;
	var words;
	if (halves.length == 1) {
		if (head.length != 8)
			return null;
		words = head;
	}
	else {
		if (head.length + tail.length > 7)
			return null;
		words = head.concat(new Array(8 - head.length - tail.length).fill(0), tail);
	}
	return { v4: false, words: words, zone: zone };
}

function isUnspecified(a) {
	return (a.v4 ? a.bytes : a.words).every(function(x) { return x == 0 });
}

function is4In6(a) {
	return !a.v4 && a.words.slice(0, 5).every(function(x) { return x == 0 }) && a.words[5] == 0xffff;
}

/* Go's netip.ParseAddrPort: { addr, port }, or null. */
function parseAddrPort(s) {
	var i = s.lastIndexOf(':');
	if (i < 0)
		return null;
	var host = s.substring(0, i), port = s.substring(i + 1), v6 = false;
	if (host.charAt(0) == '[') {
		if (host.length < 2 || host.charAt(host.length - 1) != ']')
			return null;
		host = host.substring(1, host.length - 1);
		v6 = true;
	}
	if (!/^[0-9]+$/.test(port) || BigInt(port) > 65535n)
		return null;
	var a = parseAddr(host);
	if (!a || a.v4 == v6)
		return null;
	return { addr: a, port: Number(port) };
}

function validHostname(s) {
	s = s.replace(/\.$/, '');
	if (s == '' || s.length > 253)
		return false;
	return s.split('.').every(function(l) {
		return /^[A-Za-z0-9_-]{1,63}$/.test(l) && l.charAt(0) != '-' && l.charAt(l.length - 1) != '-';
	});
}

function parseServer(s) {
	if (s.charAt(0) == '[') {
		var inner = s.substring(1, s.length - 1), a6 = parseAddr(inner);
		if (s.charAt(s.length - 1) != ']' || s.length < 2 || !a6 || a6.v4)
			throw new Bad(_('not an IP address or host name'));
		s = inner;
	}
	var a = parseAddr(s);
	if (a) {
		if (isUnspecified(a))
			throw new Bad(_('an unspecified address (0.0.0.0 or ::)'));
		return s;
	}
	if (parseAddrPort(s) || s.split(':').length == 2)
		throw new Bad(_('not a host: the port goes in option port'));
	if (!validHostname(s))
		throw new Bad(_('not an IP address or host name'));
	return s;
}

/* Go's net/url parse of an absolute http(s) URL, as far as the daemon's check goes. */
function parseURL(s) {
	var bad = new Bad(_('not an http:// or https:// URL with a host'));
	if (/[\x00-\x1f\x7f]/.test(s))
		throw bad;
	var m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^\/?#]*)/.exec(s);
	if (!m || (m[1].toLowerCase() != 'http' && m[1].toLowerCase() != 'https'))
		throw bad;
	var hostport = m[2].substring(m[2].lastIndexOf('@') + 1), host;
	if (hostport.charAt(0) == '[') {
		var end = hostport.indexOf(']');
		if (end < 0 || !/^(:[0-9]*)?$/.test(hostport.substring(end + 1)))
			throw bad;
		host = hostport.substring(1, end);
	}
	else {
		var c = hostport.lastIndexOf(':');
		if (c >= 0 && !/^[0-9]*$/.test(hostport.substring(c + 1)))
			throw bad;
		host = c >= 0 ? hostport.substring(0, c) : hostport;
		if (/[ "<>\\^`{|}]/.test(host))
			throw bad;
	}
	if (host == '')
		throw bad;
	if (/[\x00-\x20\x7f]/.test(s))
		throw new Bad(_('not a URL (it contains spaces or control characters)'));
	return s;
}

function decodedLength(s) {
	var m = /^([A-Za-z0-9+\/]*)(={0,2})$/.exec(s);
	if (!m)
		return -1;
	var n = m[1].length, pad = m[2].length;
	if (pad > 0 && (n + pad) % 4 != 0)
		return -1;
	if (n % 4 == 1)
		return -1;
	return Math.floor(n * 3 / 4);
}

/* --- checks of one option, in the daemon's words; each returns null or the message --- */

function bad(name, value, phrase) {
	return _('%s %s is %s').format(name, quoteValue(value), phrase);
}

function attempt(name, value, fn) {
	try {
		fn(value);
		return null;
	}
	catch (e) {
		if (e instanceof Bad)
			return bad(name, value, e.phrase);
		throw e;
	}
}

function credential(name, value, max) {
	var n = byteLength(value);
	if (n > max)
		return _('%s is too long (%d bytes, at most %d)').format(name, n, max);
	if (/[\x00-\x1f\x7f]/.test(value))
		return _('%s contains a control character').format(name);
	return null;
}

var checks = {
	tun_name: function(v) { return attempt('tun_name', v, parseIfname) },

	tun_mtu: function(v, ipv6) {
		return attempt('tun_mtu', v, function(s) {
			if (ipv6)
				parseRange(s, 1280, 9000, _("out of range %d-%d (IPv6 needs at least 1280; with ipv6 '0' the minimum is 576)").format(1280, 9000));
			else
				parseRange(s, 576, 9000);
		});
	},

	lan_iface: function(list) {
		if (list.length == 0)
			return _("lan_iface is empty (at least one interface, e.g. 'br-lan')");
		for (var i = 0; i < list.length; i++) {
			var err = attempt('lan_iface', list[i], parseIfname);
			if (err)
				return err;
		}
		return null;
	},

	/* bypass is the bypass_mark value, '' when it is not set. */
	fwmark: function(v, bypass) {
		var mask;
		var err = attempt('fwmark', v, function(s) { mask = parseFwmark(s)[1] });
		if (err)
			return err;
		if (bypass == '' && ((mask & DEFAULT_BYPASS) >>> 0) != 0)
			return _('fwmark mask 0x%s overlaps the default bypass_mark 0x%s (set option bypass_mark to a bit outside the mask)')
				.format(mask.toString(16), DEFAULT_BYPASS.toString(16));
		return null;
	},

	/* fwmark is the fwmark value, '' when it is not set. */
	bypass_mark: function(v, fwmark) {
		return attempt('bypass_mark', v, function(s) {
			var b = parseUint32(s), mask = DEFAULT_FWMASK;
			if (b == 0)
				throw new Bad(_('zero (the mark must have at least one bit set)'));
			if (fwmark != '') {
				try { mask = parseFwmark(fwmark)[1]; }
				catch (e) { return; }
			}
			if (((b & mask) >>> 0) != 0)
				throw new Bad(_('overlapping the fwmark mask 0x%s (they must share no bit)').format(mask.toString(16)));
		});
	},

	route_table: function(v) {
		return attempt('route_table', v, function(s) {
			var n = parseRange(s, 1, 2147483646, _('out of range %d-%d (except 252-255)').format(1, 2147483646));
			if (n >= 252 && n <= 255)
				throw new Bad(_('reserved (253 default, 254 main, 255 local; tgtun also uses the next number, for TCP); pick another table number'));
		});
	},

	rule_priority: function(v) { return attempt('rule_priority', v, function(s) { parseRange(s, 3, 32765) }) },

	update_interval: function(v) {
		return attempt('update_interval', v, function(s) { checkDuration(s, 600e9, 8760 * 3600e9, '10m', '8760h', true) });
	},

	health_target: function(v) {
		var ap = parseAddrPort(v);
		if (!ap)
			return bad('health_target', v, _("not an address with a port (e.g. '149.154.167.51:443' or '[2001:db8::1]:443')"));
		if (ap.port == 0 || isUnspecified(ap.addr) || ap.addr.zone != '')
			return bad('health_target', v, _('not a usable address and port (no port 0, unspecified address or zone)'));
		return null;
	},

	health_interval: function(v) {
		return attempt('health_interval', v, function(s) { checkDuration(s, 1e9, 3600e9, '1s', '1h', false) });
	},

	memory_limit: function(v) { return attempt('memory_limit', v, parseSize) },

	server: function(v) { return attempt('server', v, parseServer) },

	port: function(v, server) {
		if (v == '')
			return server != '' ? _('port is missing (1-65535)') : null;
		return attempt('port', v, function(s) { parseRange(s, 1, 65535) });
	},

	priority: function(v) { return attempt('priority', v, function(s) { parseRange(s, 0, 1000) }) },

	/* The proxy's credentials: returns { username: msg, password: msg } for the fields at fault. */
	credentials: function(type, server, cipher, user, pass) {
		var out = {};
		if (type == 'vless' || type == 'interface')
			return out;
		if (type == 'trojan') {
			if (pass == '')
				out.password = server != '' ? _("password is missing (trojan needs the server's password)") : null;
			else
				out.password = credential('password', pass, 1024);
			return out;
		}
		if (type == 'shadowsocks') {
			if (pass == '') {
				if (server != '')
					out.password = _("password is missing (shadowsocks needs the server's password or key)");
				return out;
			}
			out.password = credential('password', pass, 1024);
			var keyLen = SS2022_KEYS[cipher];
			if (!out.password && keyLen && !pass.split(':').every(function(k) { return decodedLength(k) == keyLen }))
				out.password = _('password is not a base64 key of %d bytes, as %s needs').format(keyLen, cipher);
			return out;
		}
		var max = (type == 'http') ? 1024 : 255;
		out.username = credential('username', user, max);
		out.password = credential('password', pass, max);
		if (!out.username && type == 'http' && user.indexOf(':') >= 0)
			out.username = _("username contains ':', which HTTP basic authentication cannot carry");
		if (!out.password && user != '' && pass == '')
			out.password = _('username is set but password is empty (both are needed for authentication)');
		if (!out.username && user == '' && pass != '')
			out.username = _('password is set but username is empty (both are needed for authentication)');
		return out;
	},

	subnet: function(v) {
		var i = v.lastIndexOf('/'), a = i >= 0 ? parseAddr(v.substring(0, i)) : null, bits = v.substring(i + 1);
		if (!a || (!a.v4 && a.zone != '') || !/^(0|[1-9][0-9]*)$/.test(bits) || +bits > (a.v4 ? 32 : 128))
			return bad('subnet', v, _("not a CIDR prefix (e.g. '203.0.113.0/24' or '2001:db8:3::/64')"));
		if (is4In6(a))
			return bad('subnet', v, _('an IPv4-mapped IPv6 prefix; write the IPv4 prefix'));
		return null;
	},

	/* URLs are not echoed: they may carry credentials. */
	url: function(v) {
		try {
			parseURL(v);
			return null;
		}
		catch (e) {
			if (e instanceof Bad)
				return _('url is %s').format(e.phrase);
			throw e;
		}
	},

	domain_url: function(v) {
		try {
			parseURL(v);
			return null;
		}
		catch (e) {
			if (e instanceof Bad)
				return _('domain_url is %s').format(e.phrase);
			throw e;
		}
	},

	/* A domain of a custom section, as the daemon reads it (its subdomains match too; a
	 * leading '*.' or '.' and a trailing dot are allowed). The value is quoted as Go's %q. */
	domain: function(v) {
		var d = v.trim().toLowerCase().replace(/^\*\./, '').replace(/^\./, '').replace(/\.$/, ''),
		    q = JSON.stringify(v), msg = null;
		if (d == '' || d == '*')
			msg = _('%s matches every domain');
		else if (d.indexOf('*') >= 0)
			msg = _("%s: only a leading '*.' is allowed (a domain covers its subdomains anyway)");
		else if (byteLength(d) > 253)
			msg = _('%s is longer than 253 characters');
		else {
			var labels = d.split('.');
			if (labels.length < 2)
				msg = _('%s is a top-level domain alone (it would send the whole TLD through the proxy)');
			for (var i = 0; !msg && i < labels.length; i++) {
				var l = labels[i];
				if (l.length == 0 || byteLength(l) > 63)
					msg = _('%s has an empty label or one longer than 63 characters');
				else if (l.charAt(0) == '-' || l.charAt(l.length - 1) == '-')
					msg = _("%s has a label starting or ending with '-'");
				else if (!/^[a-z0-9_-]+$/.test(l))
					msg = _("%s is not a host name (letters, digits, '-'; IDNs in punycode, xn--...)");
			}
			if (!msg && /^[0-9]*$/.test(labels[labels.length - 1]))
				msg = _('%s looks like an IP address, not a domain');
		}
		return msg ? 'domain ' + msg.format(q) : null;
	},

	/* include_device / exclude_device: an IPv4 or IPv6 address, a CIDR prefix or a MAC. */
	device: function(name, v) {
		var hex = v.replace(/[:.-]/g, '');
		if (/^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2})*$/.test(v) || /^[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4})+$/.test(v)) {
			if (hex.length == 12)
				return null;
			if (hex.length == 16 || hex.length == 40)
				return bad(name, v, _('not a 6-byte MAC address (aa:bb:cc:dd:ee:ff)'));
		}
		var a = parseAddr(v);
		if (a && a.zone == '')
			return null;
		var i = v.lastIndexOf('/');
		a = i >= 0 ? parseAddr(v.substring(0, i)) : null;
		if (a && a.zone == '' && /^(0|[1-9][0-9]*)$/.test(v.substring(i + 1)) && +v.substring(i + 1) <= (a.v4 ? 32 : 128))
			return is4In6(a) ? bad(name, v, _('an IPv4-mapped IPv6 prefix; write the IPv4 prefix')) : null;
		return bad(name, v, _("not an IP address, CIDR prefix or MAC address (e.g. '192.168.1.20', '192.168.1.0/28', '2001:db8::20', 'aa:bb:cc:dd:ee:ff')"));
	},

	max_flows: function(v) { return attempt('max_flows', v, function(s) { parseRange(s, 64, 65536) }) },

	max_flows_per_device: function(v, maxFlows) {
		return attempt('max_flows_per_device', v, function(s) {
			parseRange(s, 1, maxFlows, _('out of range %d-%d (at most max_flows)').format(1, maxFlows));
		});
	},

	dns_port: function(v) { return attempt('dns_port', v, function(s) { parseRange(s, 1, 65535) }) },

	dns_upstream: function(v) {
		if (v.indexOf('https://') == 0) {
			var m = /^https:\/\/([^\/?#]*)/.exec(v), host = m ? m[1].substring(m[1].lastIndexOf('@') + 1).replace(/:[0-9]*$/, '').replace(/^\[|\]$/g, '') : '';
			if (host == '' || /[\x00-\x20\x7f]/.test(v))
				return bad('dns_upstream', v, _("not an https:// URL with a host (e.g. 'https://1.1.1.1/dns-query')"));
			return null;
		}
		var a = parseAddr(v), ap = a ? null : parseAddrPort(v);
		if ((a && a.zone == '') || (ap && ap.port != 0 && !isUnspecified(ap.addr) && ap.addr.zone == ''))
			return null;
		return bad('dns_upstream', v, _("not an IP address with an optional port, or an https:// URL (e.g. '1.1.1.1', '9.9.9.9:53', '[2606:4700:4700::1111]:53', 'https://1.1.1.1/dns-query')"));
	},

	uuid: function(v) {
		if (!/^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/.test(v))
			return bad('uuid', v, _('not a UUID (32 hexadecimal digits, e.g. 9d5c6f1e-7a4b-4c3d-8e2f-1a2b3c4d5e6f)'));
		return null;
	},

	sni: function(v) {
		if (!validHostname(v) && !parseAddr(v))
			return bad('sni', v, _('not a host name'));
		return null;
	},

	/* REALITY's public key: 32 bytes, base64 (URL alphabet, as x25519 keys are printed). */
	public_key: function(v) {
		var std = v.replace(/-/g, '+').replace(/_/g, '/');
		if (decodedLength(std) != 32 && decodedLength(std + '=') != 32)
			return bad('public_key', v, _('not a REALITY public key (32 bytes in base64, 43 characters)'));
		return null;
	},

	short_id: function(v) {
		if (!/^([0-9a-fA-F]{2}){0,8}$/.test(v))
			return bad('short_id', v, _('not a REALITY short ID (up to 16 hexadecimal digits, an even number)'));
		return null;
	},

	ifname: function(v) { return attempt('interface', v, parseIfname) },

	/* A pinned certificate: hex SHA-256, ':' between bytes allowed (pcs of links). */
	pinned_sha256: function(v) {
		if (!/^[0-9a-fA-F]{64}$/.test(v.replace(/:/g, '')))
			return bad('pinned_sha256', v, _("not a SHA-256 in hex (64 hex digits, ':' between bytes allowed, as `openssl x509 -noout -fingerprint -sha256` prints it)"));
		return null;
	},

	ca_file: function(v) {
		if (v.charAt(0) != '/' || /[\x00-\x1f\x7f]/.test(v))
			return bad('ca_file', v, _("not an absolute file path (e.g. '/etc/ssl/my-ca.pem')"));
		return null;
	},

	/* Options of a subscription (the url's check is url's). */
	sub_url: function(v) {
		return v == '' ? _('url is missing (the subscription address the provider gave you, http:// or https://)') : checks.url(v);
	},

	sub_interval: function(v) {
		return attempt('interval', v, function(s) { checkDuration(s, 600e9, 8760 * 3600e9, '10m', '8760h', false) });
	},

	user_agent: function(v) {
		if (v.length > 256 || /[^\x20-\x7e]/.test(v))
			return bad('user_agent', v, _('not a User-Agent (printable ASCII, at most 256 characters)'));
		return null;
	},

	hwid: function(v) {
		if (v.length > 64 || /[^\x21-\x7e]/.test(v))
			return bad('hwid', v, _('not a device id (printable ASCII without spaces, at most 64 characters)'));
		return null;
	},

	/* include or exclude: a part of the proxies' names. */
	name_filter: function(name, v) {
		if (/[\x00-\x1f\x7f]/.test(v))
			return bad(name, v, _('not a name filter (text without control characters)'));
		return null;
	},

	/* pinned_sha256 or ca_file beside REALITY or insecure '1', as the daemon refuses them. */
	cert_options: function(type, security, insecure, hasCerts) {
		if (!hasCerts || (type != 'vless' && type != 'trojan'))
			return null;
		if (type == 'vless' && security == 'reality')
			return _('pinned_sha256 and ca_file are not allowed with security reality (REALITY authenticates the server by public_key)');
		if (insecure)
			return _("pinned_sha256 and ca_file are not allowed with insecure '1' (insecure skips the certificate check they ask for; remove insecure)");
		return null;
	},

	/* The transport of a vless or trojan proxy, and the flow it must agree with. */
	transport: function(v, flow) {
		if (TRANSPORTS.indexOf(v) < 0)
			return bad('transport', v, _('not allowed (allowed: %s)').format(TRANSPORTS.join(', ')));
		if (flow == 'xtls-rprx-vision' && v != 'tcp')
			return bad('transport', v, _("not allowed with flow xtls-rprx-vision (Vision needs transport 'tcp'; Xray refuses it over other transports)"));
		return null;
	},

	path: function(v) {
		if (v.length > 1024 || !/^[\x21-\x7e]*$/.test(v) || v.indexOf('#') >= 0)
			return bad('path', v, _("not a URL path (printable ASCII without spaces or '#', e.g. '/ws')"));
		return null;
	},

	host: function(v) {
		var i = v.indexOf(':'), h = i < 0 ? v : v.substring(0, i), port = i < 0 ? null : v.substring(i + 1);
		if (h == '' || h.length > 253 || !/^[A-Za-z0-9.-]*$/.test(h) ||
		    (port != null && !(/^[0-9]{1,9}$/.test(port) && +port >= 1 && +port <= 65535)))
			return bad('host', v, _("not a host name with an optional :port (e.g. 'cdn.example.com')"));
		return null;
	},

	service_name: function(v) {
		if (v.length > 512 || !/^[\x21-\x7e]*$/.test(v))
			return bad('service_name', v, _('not a gRPC service name (printable ASCII without spaces)'));
		return null;
	},

	mode: function(v, transport) {
		var modes = TRANSPORT_MODES[transport] || TRANSPORT_MODES.xhttp;
		if (modes.indexOf(v) < 0)
			return bad('mode', v, _("not a mode of transport '%s' (allowed: %s)").format(transport, modes.join(', ')));
		return null;
	},

	early_data: function(v) { return attempt('early_data', v, function(s) { parseRange(s, 0, 8192) }) },

	padding_bytes: function(v) {
		var m = /^([0-9]{1,9})(?:-([0-9]{1,9}))?$/.exec(v), from = m ? +m[1] : 0, to = m ? +(m[2] || m[1]) : 0;
		if (!m || from < 1 || to < from || to > 65536)
			return bad('padding_bytes', v, _("not a range of padding lengths N or N-M from 1 (e.g. '100-1000')"));
		return null;
	},

	/* XHTTP's extra: a JSON object whose fields the daemon knows (it judges their values
	 * when it builds the proxy). */
	extra: function(v) {
		var obj = null;
		try { obj = (byteLength(v) <= 8192) ? JSON.parse(v) : null; } catch (e) {}
		if (obj == null || typeof obj != 'object' || Array.isArray(obj))
			return bad('extra', v, _('not a JSON object of XHTTP settings (as share links carry it, e.g. \'{"xPaddingBytes":"100-1000"}\')'));
		var err = extraFieldError(obj);
		return err ? _('the daemon cannot use this proxy: %s').format('extra: ' + err) : null;
	}
};

/* The first field of extra (in name order) the daemon refuses by its name, or null. */
function extraFieldError(obj) {
	var names = Object.keys(obj).sort();
	for (var i = 0; i < names.length; i++) {
		var n = names[i];
		if (EXTRA_USED.indexOf(n) >= 0 || EXTRA_IGNORED[n] != null) {
			if (n == 'xmux' && obj.xmux != null && typeof obj.xmux == 'object' && !Array.isArray(obj.xmux)) {
				var xs = Object.keys(obj.xmux).sort();
				for (var j = 0; j < xs.length; j++)
					if (XMUX_FIELDS.indexOf(xs[j]) < 0)
						return 'xmux: %s: unknown field, not supported'.format(sanitize(xs[j], 30));
			}
			continue;
		}
		if (n == 'downloadSettings')
			return 'downloadSettings: not supported (a separate download server)';
		if (n == 'sessionIDTable' || n == 'sessionIDLength')
			return n + ': not supported (custom session ids are newer than the Xray-core tgtun is tested against)';
		return '%s: unknown field, not supported'.format(sanitize(n, 30));
	}
	return null;
}

/* Go's sanitize: printable ASCII bytes (others become '?'), at most max of them, then '...'. */
function sanitize(s, max) {
	var b = new TextEncoder().encode(String(s)), out = '';
	for (var i = 0; i < b.length && out.length < max; i++)
		out += (b[i] < 0x20 || b[i] > 0x7e) ? '?' : String.fromCharCode(b[i]);
	return b.length > max ? out + '...' : out;
}

/* --- share links: parse a link into the proxy's UCI options --- */

function LinkError(msg) { this.message = msg; }

/* Parameters of vless:// and trojan:// links: those a transport uses, those refused (they
 * change the wire) and those noted as not used (daemon/links holds the same lists). */
var LINK_TRANSPORT_PARAMS = {
	tcp: [ 'headerType' ],
	ws: [ 'path', 'host', 'ed' ],
	httpupgrade: [ 'path', 'host', 'ed' ],
	grpc: [ 'serviceName', 'authority', 'host', 'mode' ],
	xhttp: [ 'path', 'host', 'mode', 'extra', 'x_padding_bytes' ]
};
var LINK_KNOWN_PARAMS = [ 'type', 'security', 'encryption', 'flow', 'sni', 'peer', 'fp', 'alpn', 'allowInsecure',
	'insecure', 'pcs', 'pbk', 'sid', 'headerType', 'path', 'host', 'authority', 'serviceName', 'mode', 'extra', 'x_padding_bytes', 'ed' ];
var LINK_REFUSED_PARAMS = {
	fm: 'finalmask (fm=) changes the packets on the wire; it is not supported',
	ech: 'Encrypted Client Hello (ech=) is not supported (without it the server name would show)',
	vcn: 'verifyPeerCertByName (vcn=) is not supported'
};
var LINK_IGNORED_PARAMS = {
	spx: 'REALITY\'s spiderX: tgtun never browses the imitated site',
	pqv: 'REALITY\'s ML-DSA-65 check is not made; the server is still authenticated by its public key (pbk)',
	fragment: 'TLS ClientHello fragmentation is not done',
	heartbeatPeriod: 'WebSocket pings are not sent (an idle router stays idle)',
	cs: 'the fingerprint\'s TLS cipher suites are offered',
	seed: 'mKCP\'s seed: the transport is not mKCP',
	mtu: 'mKCP\'s MTU: the transport is not mKCP',
	tti: 'mKCP\'s TTI: the transport is not mKCP',
	quicSecurity: 'the transport is not QUIC',
	key: 'the transport is not QUIC',
	serverDescription: 'a client\'s display text'
};

/* One link → { type, server, port, username, password, cipher, uuid, flow, security, sni,
 * fingerprint, public_key, short_id, alpn: [], insecure, pinned_sha256: [], transport, path, host,
 * service_name, mode, early_data, padding_bytes, extra, name, ignored: [{ param, reason }] };
 * throws LinkError with a message that names the part it cannot use. */
function parseLink(link) {
	link = String(link).trim();
	var m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/.exec(link);
	if (!m)
		throw new LinkError(_('not a link: it must start with socks5://, http://, ss://, vless:// or trojan://'));
	var scheme = m[1].toLowerCase(), rest = m[2], name = '';
	var kind = { 'socks': 'socks5', 'socks5': 'socks5', 'socks5h': 'socks5', 'http': 'http', 'https': 'https',
		'ss': 'ss', 'vless': 'vless', 'trojan': 'trojan' }[scheme];
	if (scheme == 'hysteria2' || scheme == 'hy2' || scheme == 'hysteria' || scheme == 'tuic')
		throw new LinkError(_('%s link: not supported: %s runs over QUIC (UDP) and tgtun\'s proxies are TCP-based (supported: socks5://, http://, ss://, vless://, trojan://)')
			.format(scheme, scheme == 'tuic' ? 'TUIC' : 'Hysteria'));
	if (!kind)
		throw new LinkError(_('%s:// links are not supported; socks5://, http://, ss://, vless:// and trojan:// are').format(scheme));
	var fail = function(fmt) {
		var args = Array.prototype.slice.call(arguments, 1);
		return new LinkError(_('%s link: %s').format(scheme, fmt.format.apply(fmt, args)));
	};
	var dec = function(s, what) {
		try { return decodeURIComponent(s); }
		catch (e) { throw fail(_('%s is not valid percent-encoding'), what); }
	};

	var hash = rest.indexOf('#');
	if (hash >= 0) {
		name = dec(rest.substring(hash + 1), _('the name after #'));
		rest = rest.substring(0, hash);
	}
	var query = new URLSearchParams(''), qm = rest.indexOf('?');
	if (qm >= 0) {
		query = new URLSearchParams(rest.substring(qm + 1));
		rest = rest.substring(0, qm);
	}
	rest = rest.replace(/\/$/, '');

	if (kind == 'https')
		throw fail(_('TLS to an HTTP proxy is not supported; use an http:// link'));

	/* Legacy ss://BASE64(method:password@host:port) */
	if (kind == 'ss' && rest.indexOf('@') < 0) {
		var whole = b64decode(rest);
		if (whole == null || whole.lastIndexOf('@') < 0)
			throw fail(_('the part after ss:// is neither method:password@host:port in base64 nor userinfo@host:port'));
		rest = whole;
	}

	var at = rest.lastIndexOf('@'), userinfo = at >= 0 ? rest.substring(0, at) : null, hostport = rest.substring(at + 1);
	var hp = /^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):([0-9]+)$/.exec(hostport);
	if (!hp)
		throw fail(_("the address '%s' is not host:port"), hostport);
	var out = { type: kind, server: hp[1].replace(/^\[|\]$/g, ''), port: hp[2], username: '', password: '', cipher: '',
		uuid: '', flow: '', security: '', sni: '', fingerprint: '', public_key: '', short_id: '', alpn: [], insecure: '0',
		pinned_sha256: [], transport: '', path: '', host: '', service_name: '', mode: '', early_data: '', padding_bytes: '',
		extra: '', name: name, ignored: [] };
	var srvErr = checks.server(out.server), portErr = checks.port(out.port, out.server);
	if (srvErr || portErr)
		throw fail('%s', srvErr || portErr);

	var get = function(k) { return query.get(k) || '' };
	var ignore = function(param, reason) { out.ignored.push({ param: param, reason: reason }) };
	var sortedParams = function() {
		var seen = {}, keys = [];
		query.forEach(function(v, k) { if (!seen[k]) { seen[k] = true; keys.push(k); } });
		return keys.sort();
	};
	/* type= and headerType=, checked before the rest of the link: 'tcp' for none. */
	var transportType = function() {
		var t = get('type');
		if (t == '' || t == 'tcp' || t == 'raw')
			t = 'tcp';
		else if (t == 'splithttp')
			t = 'xhttp';
		else if (!LINK_TRANSPORT_PARAMS[t])
			throw fail(_('type=%s is not supported; tcp, ws, httpupgrade, grpc and xhttp are'), t);
		var h = get('headerType');
		if (h != '' && h != 'none')
			throw fail(_('headerType=%s is not supported; none is'), h);
		return t;
	};
	/* type= and its parameters: the transport options (daemon/links transportOptions). */
	var transportParams = function() {
		var t = transportType();
		sortedParams().forEach(function(n) {
			if (get(n) == '' || n == 'headerType' || LINK_KNOWN_PARAMS.indexOf(n) < 0 || LINK_TRANSPORT_PARAMS[t].indexOf(n) >= 0)
				return;
			for (var k in LINK_TRANSPORT_PARAMS)
				if (LINK_TRANSPORT_PARAMS[k].indexOf(n) >= 0)
					return ignore(n, 'not used by type=' + t);
		});
		if (t == 'tcp')
			return;
		out.transport = t;
		if (t == 'ws' || t == 'httpupgrade') {
			var path = get('path'), ed = '', qm = path.indexOf('?');
			if (qm >= 0) {
				var keep = path.substring(qm + 1).split('&').filter(function(kv) {
					var eq = kv.indexOf('='), k = eq < 0 ? kv : kv.substring(0, eq);
					if (k == 'ed')
						ed = eq < 0 ? '' : kv.substring(eq + 1);
					return k != 'ed';
				});
				path = path.substring(0, qm) + (keep.length ? '?' + keep.join('&') : '');
			}
			if (ed == '')
				ed = get('ed');
			out.path = path;
			out.host = get('host');
			if (ed != '') {
				if (!/^[+-]?[0-9]+$/.test(ed) || +ed < 0 || +ed > 8192)
					throw fail(_('ed=%s is not an early data size 0-8192'), ed);
				if (+ed > 0)
					out.early_data = String(+ed);
			}
		}
		else if (t == 'grpc') {
			out.service_name = get('serviceName');
			var host = get('authority');
			if (host == '')
				host = get('host');
			else if (get('host') != '' && get('host') != host)
				ignore('host', 'authority is the gRPC host');
			out.host = host;
			var gm = get('mode');
			if (gm != '' && gm != 'gun' && gm != 'multi')
				throw fail(_('mode=%s is not a gRPC mode; gun or multi is'), gm);
			out.mode = gm;
		}
		else {
			out.path = get('path');
			out.host = get('host');
			var xm = get('mode');
			if (xm != '' && TRANSPORT_MODES.xhttp.indexOf(xm) < 0)
				throw fail(_('mode=%s is not an XHTTP mode; auto, packet-up, stream-up or stream-one is'), xm);
			out.mode = xm;
			out.padding_bytes = get('x_padding_bytes');
			var e = get('extra');
			if (e != '') {
				var obj = null;
				try { obj = JSON.parse(e); } catch (err) {}
				if (obj == null || typeof obj != 'object' || Array.isArray(obj))
					throw fail(_('extra: not a JSON object'));
				Object.keys(obj).sort().forEach(function(n) {
					if (EXTRA_USED.indexOf(n) >= 0) {
						if (n == 'xmux' && obj.xmux != null && typeof obj.xmux == 'object' && !Array.isArray(obj.xmux) && 'hKeepAlivePeriod' in obj.xmux)
							ignore('extra.xmux.hKeepAlivePeriod', 'HTTP/2 keep-alive pings are not sent (an idle router stays idle)');
					}
					else if (EXTRA_IGNORED[n] != null)
						ignore('extra.' + n, EXTRA_IGNORED[n]);
					else if (n == 'downloadSettings')
						throw fail(_('extra: downloadSettings: a separate download server is not supported'));
					else if (n == 'sessionIDTable' || n == 'sessionIDLength')
						throw fail(_('extra: %s: custom session ids are not supported'), n);
					else
						throw fail(_('extra: %s: unknown field, not supported'), sanitize(n, 40));
				});
				out.extra = e;
			}
		}
	};
	/* The other parameters: refused by name when they change the wire, else noted. */
	var otherParams = function() {
		sortedParams().forEach(function(n) {
			if (get(n) == '' || LINK_KNOWN_PARAMS.indexOf(n) >= 0)
				return;
			if (LINK_REFUSED_PARAMS[n] != null)
				throw fail('%s', LINK_REFUSED_PARAMS[n]);
			if (LINK_IGNORED_PARAMS[n] != null)
				return ignore(n, LINK_IGNORED_PARAMS[n]);
			ignore(sanitize(n, 40), 'unknown to tgtun, not used');
		});
	};
	var tlsParams = function() {
		out.sni = query.get('sni') || query.get('peer') || '';
		out.fingerprint = query.get('fp') || '';
		out.alpn = (query.get('alpn') || '').split(',').filter(function(x) { return x != '' });
		var ins = query.get('allowInsecure') || query.get('insecure') || '0';
		out.insecure = (ins == '1' || ins == 'true') ? '1' : '0';
		/* pcs: Xray's pinnedPeerCertSha256, hex SHA-256s joined by ','; a pin supersedes
		 * allowInsecure, which panels write beside it for older clients. */
		out.pinned_sha256 = [];
		(query.get('pcs') || '').split(',').forEach(function(x) {
			x = x.trim().replace(/:/g, '').toLowerCase();
			if (x != '' && out.pinned_sha256.indexOf(x) < 0)
				out.pinned_sha256.push(x);
		});
		if (out.pinned_sha256.length)
			out.insecure = '0';
		if (out.fingerprint && FINGERPRINTS.indexOf(out.fingerprint) < 0)
			throw fail(_('fp=%s is not supported; one of %s is'), out.fingerprint, FINGERPRINTS.join(', '));
	};

	switch (kind) {
	case 'socks5':
	case 'http':
		if (userinfo != null) {
			var c = userinfo.indexOf(':');
			out.username = dec(c >= 0 ? userinfo.substring(0, c) : userinfo, _('the user name'));
			out.password = c >= 0 ? dec(userinfo.substring(c + 1), _('the password')) : '';
			/* v2rayN writes socks5://BASE64(user:pass)@host:port */
			var b = (kind == 'socks5' && c < 0) ? b64decode(userinfo) : null;
			if (b != null && b.indexOf(':') >= 0) {
				out.username = b.substring(0, b.indexOf(':'));
				out.password = b.substring(b.indexOf(':') + 1);
			}
		}
		break;

	case 'ss':
		out.type = 'shadowsocks';
		if (query.get('plugin'))
			throw fail(_('plugin=%s is not supported; only links without a plugin are'), query.get('plugin').split(';')[0]);
		var ui = dec(userinfo, _('the method and password'));
		if (ui.indexOf(':') < 0) {
			var d = b64decode(userinfo);
			if (d == null || d.indexOf(':') < 0)
				throw fail(_('the part before @ is neither method:password nor its base64'));
			ui = d;
		}
		out.cipher = ui.substring(0, ui.indexOf(':')).toLowerCase();
		out.password = ui.substring(ui.indexOf(':') + 1);
		if (SS_CIPHERS.indexOf(out.cipher) < 0)
			throw fail(_('cipher %s is not supported; one of %s is'), out.cipher, SS_CIPHERS.join(', '));
		break;

	case 'vless':
		out.uuid = dec(userinfo || '', 'uuid').toLowerCase();
		if (checks.uuid(out.uuid))
			throw fail('%s', checks.uuid(out.uuid));
		transportType();
		var enc = query.get('encryption');
		if (enc != null && enc != '' && enc != 'none')
			throw fail(_('encryption=%s is not supported; none is'), enc);
		out.security = query.get('security') || 'none';
		if (out.security != 'tls' && out.security != 'reality')
			throw fail(_('security=%s is not supported; tls or reality is'), out.security);
		out.flow = query.get('flow') || '';
		if (out.flow == 'xtls-rprx-vision-udp443')
			out.flow = 'xtls-rprx-vision';
		if (out.flow != '' && out.flow != 'xtls-rprx-vision')
			throw fail(_('flow=%s is not supported; xtls-rprx-vision or none is'), out.flow);
		tlsParams();
		if (out.security == 'reality') {
			out.public_key = query.get('pbk') || '';
			out.short_id = query.get('sid') || '';
			if (out.public_key == '')
				throw fail(_('pbk (the REALITY public key) is missing'));
			if (checks.public_key(out.public_key))
				throw fail('%s', checks.public_key(out.public_key));
			if (checks.short_id(out.short_id))
				throw fail('%s', checks.short_id(out.short_id));
			if (out.insecure == '1')
				throw fail(_('allowInsecure applies to tls only, not reality'));
			if (out.pinned_sha256.length)
				throw fail(_('pcs (a pinned certificate) applies to tls only, not reality'));
			if (out.alpn.length)
				ignore('alpn', 'with security=reality the fingerprint\'s ALPN is sent');
			out.alpn = [];
			if (out.sni == '')
				throw fail(_('sni is missing (REALITY needs a server name the server accepts)'));
			if (out.fingerprint == 'randomized')
				throw fail(_('fp=randomized is not allowed with security=reality (its hello may lack the X25519 share REALITY needs)'));
		}
		var lt = get('type');
		if (out.flow != '' && lt != '' && lt != 'tcp' && lt != 'raw')
			throw fail(_('flow=%s needs type=tcp; Xray refuses Vision over type=%s'), out.flow, lt);
		transportParams();
		otherParams();
		break;

	case 'trojan':
		out.password = dec(userinfo || '', _('the password'));
		if (out.password == '')
			throw fail(_('the password before @ is missing'));
		transportType();
		var sec = query.get('security');
		if (sec != null && sec != '' && sec != 'tls')
			throw fail(_('security=%s is not supported; tls is'), sec);
		tlsParams();
		transportParams();
		[ 'encryption', 'flow', 'pbk', 'sid' ].forEach(function(n) {
			if (get(n) != '')
				ignore(n, 'not a trojan parameter');
		});
		otherParams();
		break;
	}
	return out;
}

/* Standard or URL-safe base64, padded or not, as UTF-8 text; null if it is not. */
function b64decode(s) {
	s = s.replace(/-/g, '+').replace(/_/g, '/');
	while (s.length % 4)
		s += '=';
	try {
		var bin = atob(s), bytes = new Uint8Array(bin.length);
		for (var i = 0; i < bin.length; i++)
			bytes[i] = bin.charCodeAt(i);
		return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
	}
	catch (e) {
		return null;
	}
}

/* --- the form --- */

/* The current value of another option of the same section: the form's, else the saved one. */
function sibling(option, section_id, name) {
	var v = option.section.formvalue(section_id, name);
	if (v == null)
		v = option.section.cfgvalue(section_id, name);
	return (v == null) ? '' : String(v).trim();
}

function asValidator(fn) {
	return function(section_id, value) {
		var msg = fn.call(this, section_id, String(value == null ? '' : value).trim());
		return msg || true;
	};
}

/* An option whose empty value means the daemon's default: only non-empty values are checked. */
function optional(check) {
	return asValidator(function(section_id, v) { return v == '' ? null : check(v) });
}

function boolValue(option, section_id, name, dflt) {
	var v = sibling(option, section_id, name);
	if (v == '')
		return dflt;
	try { return parseBool(v); }
	catch (e) { return dflt; }
}

function serviceEnabled(name) {
	if (uci.get('tgtun', name) == null)
		return false;
	var v = uci.get('tgtun', name, 'enabled');
	try { return v == null || parseBool(v); }
	catch (e) { return true; }
}

var callStatus = rpc.declare({ object: 'tgtun', method: 'status' });
var callLeases = rpc.declare({ object: 'luci-rpc', method: 'getDHCPLeases', expect: { '': {} } });

/* "name (address, MAC)" choices for include_device / exclude_device from the DHCP leases. */
function leaseChoices(leases) {
	var out = [], seen = {};
	var add = function(value, label) {
		if (value && !seen[value]) {
			seen[value] = true;
			out.push([ value, label ]);
		}
	};
	((leases && leases.dhcp_leases) || []).concat((leases && leases.dhcp6_leases) || []).forEach(function(l) {
		var host = l.hostname || '?';
		if (l.macaddr)
			add(l.macaddr.toLowerCase(), '%s (%s, %s)'.format(host, l.macaddr.toLowerCase(), l.ipaddr || l.ip6addr || '-'));
		if (l.ipaddr)
			add(l.ipaddr, '%s (%s)'.format(host, l.ipaddr));
		if (l.ip6addr)
			add(l.ip6addr.replace(/\/.*$/, ''), '%s (%s)'.format(host, l.ip6addr.replace(/\/.*$/, '')));
	});
	return out;
}

/* The counts of a service from status.services, as its row's description. */
function serviceCounts(st, name) {
	if (!st)
		return _('Counts show while tgtun is running.');
	var svc = (st.services || []).filter(function(x) { return x.name == name })[0];
	if (!svc)
		return _('Not in use.');
	return _('%d ranges, %d domains, %d addresses resolved from them').format(svc.ranges || 0, svc.domains || 0, svc.resolved || 0);
}

/* The options a share link fills, in the order they are set (type first: the others depend on it). */
var LINK_FIELDS = [ 'type', 'server', 'port', 'username', 'password', 'cipher', 'uuid', 'flow', 'security',
	'sni', 'fingerprint', 'public_key', 'short_id', 'alpn', 'insecure', 'pinned_sha256',
	'transport', 'path', 'host', 'service_name', 'mode', 'early_data', 'padding_bytes', 'extra' ];

return view.extend({
	/* For the tests: the daemon's checks as the form runs them, and the link parser. */
	checks: checks,
	parseLink: parseLink,

	load: function() {
		return Promise.all([
			L.resolveDefault(callStatus(), null),
			L.resolveDefault(callLeases(), {}),
			/* The proxies a subscription may be fetched through are choices of its form. */
			L.resolveDefault(uci.load('tgtun'), null)
		]);
	},

	render: function(data) {
		var m, s, o, st = data ? data[0] : null, leases = data ? data[1] : {};
		if (!L.isObject(st))
			st = null;

		m = new form.Map('tgtun', _('tgtun'),
			_('Tunnels only messenger traffic (Telegram and others) from the LAN through a proxy; everything else stays on the direct path.'));

		s = m.section(form.NamedSection, 'main', 'main', _('General settings'));
		s.addremove = false;
		s.tab('general', _('General'));
		s.tab('services', _('Services'));
		s.tab('devices', _('Devices'));
		s.tab('advanced', _('Advanced'));
		s.tab('dns', _('DNS (advanced)'));

		o = s.taboption('general', form.Flag, 'enabled', _('Enable'),
			_('Run the tunnel. Needs at least one proxy with a server.'));
		o.rmempty = false;
		o.default = '0';
		o.validate = function(section_id, value) {
			/* The checkbox's state: the value passed in is its value attribute, '1' even
			 * when it is not ticked. */
			var el = this.getUIElement(section_id), on;
			if (el)
				on = el.isChecked();
			else
				try { on = parseBool(this.cfgvalue(section_id) || '0'); } catch (e) { on = false; }
			if (!on)
				return true;
			var any = uci.sections('tgtun', 'proxy').some(function(p) {
				return (p.type == 'interface') ? (p['interface'] || '') != '' : (p.server || '') != '';
			}) || uci.sections('tgtun', 'subscription').some(function(sub) {
				try { return sub.enabled == null || parseBool(sub.enabled); } catch (e) { return true; }
			});
			return any || _("enabled but no proxy has a server (set option server in a proxy section, or enabled '0')");
		};

		o = s.taboption('general', widgets.DeviceSelect, 'lan_iface', _('LAN interfaces'),
			_('Traffic entering the router from these devices is tunnelled. Nothing from other interfaces (WAN) ever is.'));
		o.multiple = true;
		o.noaliases = true;
		o.default = 'br-lan';
		o.rmempty = false;
		o.validate = function(section_id, value) {
			return checks.lan_iface(L.toArray(value)) || true;
		};

		o = s.taboption('general', form.ListValue, 'fail_mode', _('When no proxy works'),
			_('What the messengers\' traffic gets while no proxy is healthy.'));
		o.value('block', _('Block it (nothing leaks on the direct path)'));
		o.value('direct', _('Send it directly (as without tgtun)'));
		o.default = 'block';

		SERVICES.forEach(function(svc) {
			o = s.taboption('services', form.Flag, '_service_' + svc[0], svc[1], serviceCounts(st, svc[0]));
			o.rmempty = false;
			o.cfgvalue = function() { return serviceEnabled(svc[0]) ? '1' : '0' };
			/* Form.Flag writes on every save: touch the service's section only when its
			 * state changes, and create one only to enable a service. */
			o.write = function(section_id, value) {
				var on = (value == '1');
				if (on == serviceEnabled(svc[0]))
					return;
				if (uci.get('tgtun', svc[0]) == null)
					uci.add('tgtun', 'service', svc[0]);
				uci.set('tgtun', svc[0], 'enabled', on ? '1' : '0');
			};
			o.remove = function(section_id) { this.write(section_id, '0') };
		});
		s.taboption('services', form.DummyValue, '_services_note', ' ').default =
			_('The subnets of each ticked service are tunnelled and refreshed from the service\'s published list. Add your own below, under Custom subnets and lists.');

		var deviceList = function(name, title, descr) {
			var d = s.taboption('devices', form.DynamicList, name, title, descr);
			leaseChoices(leases).forEach(function(c) { d.value(c[0], c[1]) });
			d.validate = optional(function(v) { return checks.device(name, v) });
			return d;
		};
		deviceList('include_device', _('Only these devices'),
			_('If set, only these devices are tunnelled. An IPv4 or IPv6 address, a CIDR prefix or a MAC address; pick a DHCP lease or type one.'));
		deviceList('exclude_device', _('Never these devices'),
			_('These devices are never tunnelled, even if listed above. An IPv4 or IPv6 address, a CIDR prefix or a MAC address.'));

		o = s.taboption('advanced', form.Flag, 'ipv6', _('IPv6'), _('Also tunnel the services\' IPv6 subnets.'));
		o.default = '1';
		o.rmempty = false;

		o = s.taboption('advanced', form.Flag, 'router_traffic', _('Router\'s own traffic'),
			_('Also tunnel connections the router itself makes to the services.'));
		o.default = '0';

		o = s.taboption('advanced', form.Value, 'update_interval', _('List update interval'),
			_('How often the subnet lists are downloaded again: e.g. 24h, 12h, 7d; 0 never. At least 10m.'));
		o.placeholder = '24h';
		o.validate = optional(checks.update_interval);

		o = s.taboption('advanced', form.Value, 'health_target', _('Health check target'),
			_('Address and port probed through each proxy to judge its health.'));
		o.placeholder = '149.154.167.51:443';
		o.validate = optional(checks.health_target);

		o = s.taboption('advanced', form.ListValue, 'select', _('Proxy choice'),
			_('Among healthy proxies of the same priority (a subscription\'s, say): the first in order, or the one with the lowest latency in the health checks (it changes only when another is clearly faster).'));
		o.value('priority', _('First in order'));
		o.value('latency', _('Lowest latency'));
		o.default = 'priority';

		o = s.taboption('advanced', form.Value, 'health_interval', _('Health check interval'), _('1s to 1h.'));
		o.placeholder = '10s';
		o.validate = optional(checks.health_interval);

		o = s.taboption('advanced', form.Value, 'fwmark', _('Firewall mark'),
			_('Mark of tunnelled connections: VALUE or VALUE/MASK, hexadecimal (0x…) or decimal. Choose bits no other package uses.'));
		o.placeholder = '0x100000';
		o.validate = asValidator(function(section_id, v) {
			return v == '' ? null : checks.fwmark(v, sibling(this, section_id, 'bypass_mark'));
		});

		o = s.taboption('advanced', form.Value, 'bypass_mark', _('Bypass mark'),
			_('Mark of tgtun\'s own connections (to the proxy, list downloads), which are never tunnelled. No bit in common with the firewall mark.'));
		o.placeholder = '0x200000';
		o.validate = asValidator(function(section_id, v) {
			return v == '' ? null : checks.bypass_mark(v, sibling(this, section_id, 'fwmark'));
		});

		o = s.taboption('advanced', form.Value, 'route_table', _('Routing table'),
			_('Table holding the route into the tunnel: 1-2147483646, not 252-255 (the next table is used too, for TCP).'));
		o.placeholder = '7470';
		o.validate = optional(checks.route_table);

		o = s.taboption('advanced', form.Value, 'rule_priority', _('Rule priority'),
			_('Priority of the ip rule for marked traffic: 3-32765 (the two below it are used too).'));
		o.placeholder = '7470';
		o.validate = optional(checks.rule_priority);

		o = s.taboption('advanced', form.Value, 'tun_name', _('Tunnel device'), _('Name of the TUN device.'));
		o.placeholder = 'tgtun0';
		o.validate = optional(checks.tun_name);

		o = s.taboption('advanced', form.Value, 'tun_mtu', _('Tunnel MTU'), _('1280-9000 (576-9000 without IPv6).'));
		o.placeholder = '1500';
		o.validate = asValidator(function(section_id, v) {
			return v == '' ? null : checks.tun_mtu(v, boolValue(this, section_id, 'ipv6', true));
		});

		o = s.taboption('advanced', form.Value, 'memory_limit', _('Memory limit'),
			_('Soft memory limit of the daemon, e.g. 32M; 0 for none.'));
		o.placeholder = '32M';
		o.validate = optional(checks.memory_limit);

		o = s.taboption('advanced', form.Value, 'max_flows', _('Maximum connections'),
			_('Connections tunnelled at once, all devices together: 64-65536. Each idle TCP connection costs about 7 KiB.'));
		o.placeholder = '4096';
		o.validate = optional(checks.max_flows);

		o = s.taboption('advanced', form.Value, 'max_flows_per_device', _('Maximum connections per device'),
			_('So that one device cannot take every slot: 1 up to the maximum above. Default: a quarter of it.'));
		o.placeholder = '1024';
		o.validate = asValidator(function(section_id, v) {
			if (v == '')
				return null;
			var max = parseInt(sibling(this, section_id, 'max_flows'), 10);
			return checks.max_flows_per_device(v, (max >= 64 && max <= 65536) ? max : 4096);
		});

		o = s.taboption('dns', form.DummyValue, '_dns_note', ' ');
		o.default = _('For services and custom sections with domains, tgtun answers dnsmasq\'s queries for those domains itself, asking the upstream resolver through the proxy, so that a poisoned local answer cannot send them elsewhere. The defaults suit most routers.');

		o = s.taboption('dns', form.Value, 'dns_port', _('DNS forwarder port'),
			_('Port of tgtun\'s DNS forwarder on 127.0.0.1, which dnsmasq asks for the listed domains.'));
		o.placeholder = '5354';
		o.validate = optional(checks.dns_port);

		o = s.taboption('dns', form.Value, 'dns_upstream', _('Upstream DNS resolver'),
			_('Asked through the proxy: IP[:port] for DNS over TCP, or an https:// URL for DNS over HTTPS.'));
		o.placeholder = '1.1.1.1:53';
		o.value('1.1.1.1:53', '1.1.1.1:53 (Cloudflare)');
		o.value('9.9.9.9:53', '9.9.9.9:53 (Quad9)');
		o.value('https://1.1.1.1/dns-query');
		o.validate = optional(checks.dns_upstream);

		o = s.taboption('advanced', form.ListValue, 'log_level', _('Log level'));
		o.value('debug', _('Debug'));
		o.value('info', _('Info'));
		o.value('warn', _('Warning'));
		o.value('error', _('Error'));
		o.default = 'info';

		s = m.section(form.GridSection, 'proxy', _('Proxies'),
			_('The healthy proxy with the lowest priority carries the traffic; the others stand by.'));
		s.addremove = true;
		s.anonymous = false;
		s.nodescriptions = true;
		s.modaltitle = _('Proxy');

		/* rpcd turns `uci add` with the name of an existing section into a type change
		 * (a proxy named 'main' would replace the main section): refuse taken names, and
		 * the service names, whose sections the Services tab creates. */
		var nameTaken = function(name) {
			return uci.get('tgtun', name) != null || name == 'main' ||
				SERVICES.some(function(svc) { return svc[0] == name });
		};
		s.renderSectionAdd = function(extra_class) {
			var el = form.GridSection.prototype.renderSectionAdd.apply(this, arguments),
			    input = el.querySelector('.cbi-section-create-name');
			if (input)
				ui.addValidator(input, 'uciname', true, function(v) {
					if (v === '')
						return _('Expecting: %s').format(_('non-empty value'));
					if (nameTaken(v))
						return _("The name '%s' is taken by another section: pick another name.").format(v);
					return true;
				}, 'blur', 'keyup');
			return el;
		};
		s.handleAdd = function(ev, name) {
			if (name != null && nameTaken(name)) {
				ui.addNotification(null, E('p', {}, [ _("The name '%s' is taken by another section: pick another name.").format(name) ]), 'error');
				return Promise.resolve();
			}
			return form.GridSection.prototype.handleAdd.apply(this, arguments);
		};

		/* Paste link: fills the editor from a share link; never saved itself. */
		o = s.option(form.Value, '_link', _('Paste link'),
			_('A socks5://, http://, ss://, vless:// or trojan:// link fills in the fields below; what the link carries that tgtun does not use is listed.'));
		o.modalonly = true;
		o.placeholder = 'vless://…@198.51.100.6:443?security=reality&…';
		o.cfgvalue = function() { return '' };
		o.write = o.remove = function() {};
		o.validate = function(section_id, value) {
			if (value == null || String(value).trim() == '')
				return true;
			try {
				parseLink(value);
				return true;
			}
			catch (e) {
				if (e instanceof LinkError)
					return e.message;
				throw e;
			}
		};
		o.onchange = function(ev, section_id, value) {
			var link;
			try { link = parseLink(value); }
			catch (e) { if (e instanceof LinkError) return; throw e; }
			var sect = this.section;
			LINK_FIELDS.forEach(function(name) {
				var el = sect.getUIElement(section_id, name);
				if (!el)
					return;
				var v = link[name];
				if (name == 'fingerprint' && v == '')
					v = (link.type == 'vless' || link.type == 'trojan') ? 'chrome' : '';
				if (name == 'security' && v == '')
					v = 'tls';
				if (name == 'cipher' && v == '')
					return;
				if (name == 'transport' && v == '')
					v = (link.type == 'vless' || link.type == 'trojan') ? 'tcp' : '';
				el.setValue(v);
				el.triggerValidation && el.triggerValidation();
			});
			this.map.checkDepends();
			if (link.ignored.length)
				ui.addNotification(null, E('p', {}, [ _('Not used from the link: %s').format(link.ignored.map(function(i) {
					return i.param + ' (' + i.reason + ')';
				}).join('; ')) ]), 'info');
		};

		o = s.option(form.ListValue, 'type', _('Type'));
		PROXY_TYPES.forEach(function(t) { o.value(t[0], t[1]) });
		o.default = 'socks5';

		var withServer = function(opt) {
			PROXY_TYPES.forEach(function(t) { if (t[3]) opt.depends('type', t[0]) });
		};

		o = s.option(form.Value, 'server', _('Server'), _('IP address or host name, without the port.'));
		o.placeholder = '198.51.100.6';
		o.validate = optional(checks.server);
		withServer(o);
		o.textvalue = function(section_id) {
			if (sibling(this, section_id, 'type') == 'interface')
				return _('via %s').format(sibling(this, section_id, 'interface') || '?');
			return this.cfgvalue(section_id) || '-';
		};

		o = s.option(form.Value, 'port', _('Port'));
		o.placeholder = '1080';
		o.validate = asValidator(function(section_id, v) {
			return checks.port(v, sibling(this, section_id, 'server'));
		});
		withServer(o);
		o.textvalue = function(section_id) {
			return sibling(this, section_id, 'type') == 'interface' ? '-' : (this.cfgvalue(section_id) || '-');
		};

		o = s.option(form.Value, 'interface', _('Interface'),
			_('The network interface (e.g. wg0 of WireGuard or AmneziaWG) that carries this traffic: a netifd interface or device name.'));
		o.modalonly = true;
		o.placeholder = 'wg0';
		o.depends('type', 'interface');
		o.rmempty = false;
		o.validate = asValidator(function(section_id, v) {
			return v == '' ? _('interface is missing (the interface type needs option interface)') : checks.ifname(v);
		});

		var credentialCheck = function(field) {
			return asValidator(function(section_id) {
				var type = sibling(this, section_id, 'type') || 'socks5';
				return checks.credentials(type, sibling(this, section_id, 'server'), sibling(this, section_id, 'cipher'),
					(type == 'socks5' || type == 'http') ? sibling(this, section_id, 'username') : '',
					sibling(this, section_id, 'password'))[field] || null;
			});
		};

		o = s.option(form.Value, 'username', _('Username'));
		o.depends('type', 'socks5');
		o.depends('type', 'http');
		o.validate = credentialCheck('username');

		o = s.option(form.Value, 'password', _('Password'),
			_('For Shadowsocks: the password, or for 2022 ciphers the base64 key. For Trojan: the server\'s password.'));
		o.password = true;
		o.modalonly = true;
		o.depends('type', 'socks5');
		o.depends('type', 'http');
		o.depends('type', 'shadowsocks');
		o.depends('type', 'trojan');
		o.validate = credentialCheck('password');

		o = s.option(form.ListValue, 'cipher', _('Cipher'));
		SS_CIPHERS.forEach(function(c) { o.value(c) });
		o.default = 'chacha20-ietf-poly1305';
		o.depends('type', 'shadowsocks');
		o.rmempty = false;
		o.textvalue = function(section_id) {
			return sibling(this, section_id, 'type') == 'shadowsocks' ? this.cfgvalue(section_id) || this.default : '-';
		};

		o = s.option(form.Value, 'uuid', _('UUID'), _('The user ID the VLESS server knows you by.'));
		o.modalonly = true;
		o.depends('type', 'vless');
		o.rmempty = false;
		o.validate = asValidator(function(section_id, v) {
			return v == '' ? (sibling(this, section_id, 'server') != '' ? _('uuid is missing (vless needs the user ID)') : null) : checks.uuid(v);
		});

		o = s.option(form.ListValue, 'security', _('Security'),
			_('REALITY borrows a real site\'s TLS certificate (needs the server\'s public key); TLS uses the server\'s own.'));
		o.modalonly = true;
		o.value('tls', 'TLS');
		o.value('reality', 'REALITY');
		o.default = 'tls';
		o.depends('type', 'vless');

		o = s.option(form.ListValue, 'flow', _('Flow'));
		o.modalonly = true;
		o.value('', _('none'));
		o.value('xtls-rprx-vision', 'xtls-rprx-vision');
		o.depends('type', 'vless');

		o = s.option(form.Value, 'sni', _('Server name (SNI)'),
			_('The name sent in the TLS handshake; for REALITY the site it borrows. Empty: the server\'s host name.'));
		o.modalonly = true;
		o.depends('type', 'vless');
		o.depends('type', 'trojan');
		o.validate = optional(checks.sni);

		o = s.option(form.ListValue, 'fingerprint', _('TLS fingerprint'), _('Which browser the TLS handshake looks like.'));
		o.modalonly = true;
		FINGERPRINTS.forEach(function(f) { o.value(f) });
		o.default = 'chrome';
		o.depends('type', 'vless');
		o.depends('type', 'trojan');

		o = s.option(form.Value, 'public_key', _('Public key'), _('The REALITY server\'s public key (pbk in links).'));
		o.modalonly = true;
		o.depends({ type: 'vless', security: 'reality' });
		o.rmempty = false;
		o.validate = asValidator(function(section_id, v) {
			return v == '' ? _('public_key is missing (REALITY needs the server\'s public key)') : checks.public_key(v);
		});

		o = s.option(form.Value, 'short_id', _('Short ID'), _('One of the REALITY server\'s short IDs (sid in links); may be empty.'));
		o.modalonly = true;
		o.depends({ type: 'vless', security: 'reality' });
		o.validate = optional(checks.short_id);

		o = s.option(form.DynamicList, 'alpn', _('ALPN'), _('Protocols offered in the TLS handshake, e.g. h2, http/1.1. Empty: the default.'));
		o.modalonly = true;
		o.depends({ type: 'vless', security: 'tls' });
		o.depends('type', 'trojan');

		o = s.option(form.Flag, 'insecure', _('Skip certificate check'),
			_('Accept any certificate of the server. Only for testing: anyone on the path can then read the traffic.'));
		o.modalonly = true;
		o.default = '0';
		o.depends({ type: 'vless', security: 'tls' });
		o.depends('type', 'trojan');

		var certCheck = function(section_id) {
			var type = sibling(this, section_id, 'type'), pins = this.section.formvalue(section_id, 'pinned_sha256');
			if (pins == null)
				pins = this.section.cfgvalue(section_id, 'pinned_sha256');
			var hasCerts = L.toArray(pins).length > 0 || sibling(this, section_id, 'ca_file') != '';
			return checks.cert_options(type, sibling(this, section_id, 'security') || 'tls',
				boolValue(this, section_id, 'insecure', false), hasCerts);
		};

		o = s.option(form.DynamicList, 'pinned_sha256', _('Pinned certificate (SHA-256)'),
			_('The server\'s certificate is accepted only if its SHA-256 is one of these (pcs in links), e.g. from `openssl x509 -noout -fingerprint -sha256`. For a self-signed server.'));
		o.modalonly = true;
		o.depends({ type: 'vless', security: 'tls' });
		o.depends('type', 'trojan');
		o.validate = asValidator(function(section_id, v) {
			return (v != '' && checks.pinned_sha256(v)) || certCheck.call(this, section_id);
		});

		o = s.option(form.Value, 'ca_file', _('CA certificate file'),
			_('A PEM file on the router with the CA certificates to trust for this server instead of the system\'s.'));
		o.modalonly = true;
		o.placeholder = '/etc/ssl/my-ca.pem';
		o.depends({ type: 'vless', security: 'tls' });
		o.depends('type', 'trojan');
		o.validate = asValidator(function(section_id, v) {
			return (v != '' && checks.ca_file(v)) || certCheck.call(this, section_id);
		});

		/* The transport under VLESS/Trojan and its options (docs/config.md). */
		var withTransport = function(opt, transports) {
			[ 'vless', 'trojan' ].forEach(function(type) {
				transports.forEach(function(t) { opt.depends({ type: type, transport: t }) });
			});
		};

		o = s.option(form.ListValue, 'transport', _('Transport'),
			_('How the stream reaches the server: as TLS itself (tcp), or inside WebSocket, HTTPUpgrade, gRPC or XHTTP requests, as the server is set up.'));
		o.modalonly = true;
		o.value('tcp', _('none (tcp)'));
		o.value('ws', 'WebSocket');
		o.value('httpupgrade', 'HTTPUpgrade');
		o.value('grpc', 'gRPC');
		o.value('xhttp', 'XHTTP');
		o.default = 'tcp';
		o.depends('type', 'vless');
		o.depends('type', 'trojan');
		o.validate = asValidator(function(section_id, v) {
			return checks.transport(v || 'tcp', sibling(this, section_id, 'type') == 'vless' ? sibling(this, section_id, 'flow') : '');
		});
		/* tcp is no transport: the section then has no option transport. */
		o.write = function(section_id, v) {
			return (v == 'tcp') ? this.remove(section_id) : form.ListValue.prototype.write.apply(this, arguments);
		};

		o = s.option(form.Value, 'path', _('Path'), _('The HTTP path the server serves the transport on, e.g. /ws.'));
		o.modalonly = true;
		o.placeholder = '/';
		withTransport(o, [ 'ws', 'httpupgrade', 'xhttp' ]);
		o.validate = optional(checks.path);

		o = s.option(form.Value, 'host', _('HTTP host'), _('The Host of the requests (for gRPC its authority). Empty: the server name.'));
		o.modalonly = true;
		withTransport(o, [ 'ws', 'httpupgrade', 'grpc', 'xhttp' ]);
		o.validate = optional(checks.host);

		o = s.option(form.Value, 'service_name', _('gRPC service name'), _('serviceName in links.'));
		o.modalonly = true;
		withTransport(o, [ 'grpc' ]);
		o.validate = optional(checks.service_name);

		o = s.option(form.Value, 'mode', _('Mode'),
			_('gRPC: gun or multi. XHTTP: auto, packet-up (also through CDNs and over HTTP/1.1), stream-up or stream-one. As the server is set up.'));
		o.modalonly = true;
		[ 'auto', 'packet-up', 'stream-up', 'stream-one', 'gun', 'multi' ].forEach(function(m) { o.value(m) });
		withTransport(o, [ 'grpc', 'xhttp' ]);
		o.validate = asValidator(function(section_id, v) {
			return v == '' ? null : checks.mode(v, sibling(this, section_id, 'transport'));
		});

		o = s.option(form.Value, 'early_data', _('Early data'),
			_('WebSocket: the first bytes (up to this many) go with the upgrade request (ed in links). HTTPUpgrade: above 0, data follows the request at once.'));
		o.modalonly = true;
		o.placeholder = '0';
		withTransport(o, [ 'ws', 'httpupgrade' ]);
		o.validate = optional(checks.early_data);

		o = s.option(form.Value, 'padding_bytes', _('XHTTP padding'), _('Padding lengths the server accepts, e.g. 100-1000 (x_padding_bytes in links).'));
		o.modalonly = true;
		o.placeholder = '100-1000';
		withTransport(o, [ 'xhttp' ]);
		o.validate = optional(checks.padding_bytes);

		o = s.option(form.TextValue, 'extra', _('XHTTP extra'), _('The JSON of extra= in the link: further XHTTP settings of the server.'));
		o.modalonly = true;
		o.rows = 3;
		withTransport(o, [ 'xhttp' ]);
		o.validate = optional(checks.extra);

		o = s.option(form.Flag, 'udp', _('UDP'), _('Relay UDP (voice calls) through the proxy.'));
		o.default = '1';
		o.rmempty = false;
		PROXY_TYPES.forEach(function(t) { if (t[2]) o.depends('type', t[0]) });
		o.textvalue = function(section_id) {
			return proxyType(sibling(this, section_id, 'type') || 'socks5')[2] ? form.Flag.prototype.textvalue.apply(this, arguments) : '-';
		};

		o = s.option(form.Value, 'priority', _('Priority'), _('0-1000; lower wins.'));
		o.placeholder = '10';
		o.validate = optional(checks.priority);

		s = m.section(form.GridSection, 'subscription', _('Subscriptions'),
			_('A provider\'s subscription URL: its links become proxies (named after the subscription and the links\' names), refreshed on their own. A refresh that fails keeps the last proxies.'));
		s.addremove = true;
		s.anonymous = false;
		s.nodescriptions = true;
		s.modaltitle = _('Subscription');
		s.renderSectionAdd = function(extra_class) {
			var el = form.GridSection.prototype.renderSectionAdd.apply(this, arguments),
			    input = el.querySelector('.cbi-section-create-name');
			if (input)
				ui.addValidator(input, 'uciname', true, function(v) {
					if (v === '')
						return _('Expecting: %s').format(_('non-empty value'));
					if (nameTaken(v))
						return _("The name '%s' is taken by another section: pick another name.").format(v);
					return true;
				}, 'blur', 'keyup');
			return el;
		};
		s.handleAdd = function(ev, name) {
			if (name != null && nameTaken(name)) {
				ui.addNotification(null, E('p', {}, [ _("The name '%s' is taken by another section: pick another name.").format(name) ]), 'error');
				return Promise.resolve();
			}
			return form.GridSection.prototype.handleAdd.apply(this, arguments);
		};

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.Value, 'url', _('Subscription URL'), _('The address the provider gave you (https://…). It holds your account\'s token.'));
		o.placeholder = 'https://panel.example.org/sub/…';
		o.rmempty = false;
		o.validate = asValidator(function(section_id, v) { return checks.sub_url(v) });
		o.textvalue = function(section_id) {
			var v = this.cfgvalue(section_id) || '', m = /^([a-z]+:\/\/[^\/?#]+)/i.exec(v);
			return m ? m[1] + (v.length > m[1].length ? '/…' : '') : '-';
		};

		o = s.option(form.ListValue, 'via', _('Fetch through'),
			_('How the URL is fetched: through the proxy in use (directly while none works), directly, or through one proxy.'));
		o.value('', _('the proxy in use'));
		o.value('direct', _('directly'));
		/* Every proxy section, as the daemon's check allows: an interface proxy (a
		 * WireGuard tunnel, say) too. */
		uci.sections('tgtun', 'proxy').forEach(function(p) {
			o.value(p['.name'], _('proxy %s').format(p['.name']));
		});
		/* Unset is the proxy in use (LuCI's grid would say "none"). */
		o.textvalue = function(section_id) {
			var v = this.cfgvalue(section_id);
			return (v == null || v === '') ? _('the proxy in use') : form.ListValue.prototype.textvalue.apply(this, arguments);
		};

		o = s.option(form.Value, 'interval', _('Refresh every'),
			_('e.g. 6h, 1d; at least 10m. Empty: what the provider asks (profile-update-interval), else 12h.'));
		o.placeholder = _('from the provider');
		o.validate = optional(checks.sub_interval);

		o = s.option(form.Value, 'priority', _('Priority'), _('Of all its proxies: 0-1000, lower wins.'));
		o.placeholder = '10';
		o.validate = optional(checks.priority);

		o = s.option(form.DynamicList, 'include', _('Only names with'),
			_('Use only the links whose name contains one of these (any case), e.g. NL or Amsterdam.'));
		o.modalonly = true;
		o.validate = optional(function(v) { return checks.name_filter('include', v) });

		o = s.option(form.DynamicList, 'exclude', _('Not names with'), _('Leave out the links whose name contains one of these.'));
		o.modalonly = true;
		o.validate = optional(function(v) { return checks.name_filter('exclude', v) });

		o = s.option(form.Value, 'user_agent', _('User-Agent'),
			_('The client the router poses as: panels answer only clients they know. Change it if the panel sends no links.'));
		o.modalonly = true;
		o.placeholder = 'Happ/1.63.0';
		o.validate = optional(checks.user_agent);

		o = s.option(form.Flag, 'device_headers', _('Send device headers'),
			_('X-HWID (a stable id derived from the router, never its MAC address), the OS and the model, which panels with a device limit ask for.'));
		o.modalonly = true;
		o.default = '1';

		o = s.option(form.Value, 'hwid', _('Device id'), _('Instead of the derived one (X-HWID).'));
		o.modalonly = true;
		o.depends('device_headers', '1');
		o.validate = optional(checks.hwid);

		s = m.section(form.TypedSection, 'custom', _('Custom subnets and lists'),
			_('Your own subnets, domains, and lists to download (one entry a line, \'#\' comments).'));
		s.addremove = true;
		s.anonymous = true;

		o = s.option(form.DynamicList, 'subnet', _('Subnets'), _('IPv4 or IPv6 prefixes, e.g. 203.0.113.0/24.'));
		o.validate = optional(checks.subnet);

		o = s.option(form.DynamicList, 'url', _('List URLs'), _('http:// or https:// addresses of lists.'));
		o.validate = optional(checks.url);

		o = s.option(form.DynamicList, 'domain', _('Domains'),
			_('Domain names whose addresses are tunnelled, e.g. example.org; their subdomains match too.'));
		o.validate = optional(checks.domain);

		o = s.option(form.DynamicList, 'domain_url', _('Domain list URLs'),
			_('http:// or https:// addresses of lists of domains (one a line).'));
		o.validate = optional(checks.domain_url);

		return m.render();
	}
});
