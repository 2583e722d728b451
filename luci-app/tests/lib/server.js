'use strict';
// Serves the views (htdocs), the LuCI stand-in (harness/) and the translation catalogues
// on 127.0.0.1 at a free port.
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const { appDir, catalog } = require('./i18n');

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css', '.json': 'application/json' };

function start() {
	const roots = [['/luci-static/', path.join(appDir, 'htdocs/luci-static')], ['/harness/', path.join(__dirname, '..', 'harness')]];
	const server = http.createServer((req, res) => {
		const url = new URL(req.url, 'http://localhost');
		let file = null;
		if (url.pathname === '/') file = path.join(__dirname, '..', 'harness', 'index.html');
		const cat = /^\/catalog\/([a-z_]+)\.json$/i.exec(url.pathname);
		if (cat) {
			const po = path.join(appDir, 'po', cat[1], 'tgtun.po');
			if (!fs.existsSync(po)) { res.writeHead(404); return res.end(); }
			res.writeHead(200, { 'content-type': TYPES['.json'] });
			return res.end(JSON.stringify(catalog(po)));
		}
		for (const [prefix, dir] of roots) {
			if (url.pathname.startsWith(prefix)) {
				const p = path.resolve(dir, '.' + decodeURIComponent(url.pathname.slice(prefix.length - 1)));
				if (p.startsWith(dir + path.sep)) file = p;
			}
		}
		if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) { res.writeHead(404); return res.end('not found'); }
		res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
		fs.createReadStream(file).pipe(res);
	});
	return new Promise((resolve, reject) => {
		server.once('error', reject);
		server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${server.address().port}/` }));
	});
}

module.exports = { start };
