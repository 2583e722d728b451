'use strict';
// Loads a view under node with the LuCI stand-in (harness/luci-stub.js), without a DOM:
// enough to call the view's own functions, such as the settings checks.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { appDir } = require('./i18n');

function loadView(name) {
	if (!globalThis.LuCIStub) {
		const stub = path.join(__dirname, '..', 'harness', 'luci-stub.js');
		vm.runInThisContext(fs.readFileSync(stub, 'utf8'), { filename: stub });
	}
	const file = path.join(appDir, 'htdocs/luci-static/resources/view', `${name}.js`);
	const View = globalThis.LuCIStub.compile(fs.readFileSync(file, 'utf8'), file);
	return new View();
}

module.exports = { loadView };
