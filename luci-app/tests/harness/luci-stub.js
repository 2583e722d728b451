/*
 * A small stand-in for LuCI's client runtime, for tests only.
 *
 * Used only where nothing real can serve: by validate.test.js and links.test.js (through
 * lib/load-view.js) to load settings.js under node, without a browser, and call its
 * checks on ~140 values against `tgtun config check`: LuCI's real runtime needs a DOM,
 * which node alone does not have. Every page, form and save test runs on the real
 * runtime in Chromium against OpenWrt's real uhttpd, rpcd and ubusd instead
 * (runtime.test.js, lib/router.js); the ubus answers below are not used by any test.
 *
 * It is NOT LuCI: it provides just enough of L, E, _, String.prototype.format and the
 * modules the tgtun views require (baseclass, view, form, uci, rpc, ui, dom, poll,
 * tools.widgets) to load the views unchanged, render them the way LuCI lays pages out,
 * run their validation, and answer their ubus calls from sample data
 * (window.STUB_UCI, window.STUB_UBUS, window.STUB_DEVICES). Every ubus call is recorded
 * in window.STUB_CALLS. It also runs under node (for the validation tests), where
 * only the parts without a DOM are used.
 */
(function(G) {
	'use strict';

	/* --- String.prototype.format: the subset of LuCI's sprintf the views use --- */
	String.prototype.format = function() {
		var args = arguments, i = 0;
		return this.replace(/%(-)?(\d+)?(?:\.(\d+))?([sdfxh%])/g, function(m, left, width, prec, conv) {
			if (conv == '%')
				return '%';
			var a = args[i++], s;
			switch (conv) {
			case 's': s = (a == null) ? '' : String(a); break;
			case 'h': s = String(a == null ? '' : a).replace(/[&<>"']/g, function(c) { return '&#' + c.charCodeAt(0) + ';' }); break;
			case 'd': s = String(Math.trunc(+a || 0)); break;
			case 'x': s = (+a >>> 0).toString(16); break;
			case 'f': s = (+a || 0).toFixed(prec != null ? +prec : 6); break;
			}
			while (width && s.length < +width)
				s = left ? s + ' ' : ' ' + s;
			return s;
		});
	};

	/* --- translation: the catalogue the page loads (window.STUB_CATALOG), else the msgid --- */
	G._ = function(msgid) {
		var cat = G.STUB_CATALOG || {};
		return Object.prototype.hasOwnProperty.call(cat, msgid) && cat[msgid] ? cat[msgid] : msgid;
	};
	G.N_ = function(n, singular, plural) { return G._(n == 1 ? singular : plural) };

	function isObject(v) { return v != null && typeof v == 'object' && !Array.isArray(v) }

	G.L = {
		env: {},
		isObject: isObject,
		toArray: function(v) {
			if (v == null) return [];
			if (Array.isArray(v)) return v;
			return String(v).trim() == '' ? [] : String(v).trim().split(/\s+/);
		},
		bind: function(fn, self) {
			var extra = Array.prototype.slice.call(arguments, 2);
			return function() { return fn.apply(self, extra.concat(Array.prototype.slice.call(arguments))) };
		},
		resolveDefault: function(p, dflt) { return Promise.resolve(p).catch(function() { return dflt }) },
		raise: function(type, fmt) {
			var e = new Error(fmt.format.apply(fmt, Array.prototype.slice.call(arguments, 2)));
			e.name = type;
			throw e;
		}
	};

	/* --- E(): element builder as in LuCI --- */
	function appendChildren(node, children) {
		if (children == null || children === '')
			return;
		if (Array.isArray(children)) {
			children.forEach(function(c) { appendChildren(node, c) });
			return;
		}
		node.appendChild(children instanceof Node ? children : document.createTextNode(String(children)));
	}

	G.E = function(tag, attrs, children) {
		if (!isObject(attrs) || attrs instanceof Node) {
			children = attrs;
			attrs = {};
		}
		var node = document.createElement(tag);
		Object.keys(attrs || {}).forEach(function(k) {
			var v = attrs[k];
			if (v == null || v === false)
				return;
			if (typeof v == 'function')
				node.addEventListener(k, v);
			else
				node.setAttribute(k, v === true ? '' : String(v));
		});
		appendChildren(node, children);
		return node;
	};

	/* --- class helper: Base.extend({...}) like L.Class --- */
	function extend(Base, props) {
		var C = function() {
			if (typeof this.__init__ == 'function')
				this.__init__.apply(this, arguments);
		};
		C.prototype = Object.create(Base.prototype);
		Object.assign(C.prototype, props);
		C.prototype.constructor = C;
		C.extend = function(p) { return extend(C, p) };
		return C;
	}
	var Baseclass = function() {};
	Baseclass.extend = function(p) { return extend(Baseclass, p) };

	/* --- dom --- */
	var dom = {
		content: function(node, children) {
			while (node.firstChild)
				node.removeChild(node.firstChild);
			appendChildren(node, children);
			return node;
		},
		append: function(node, children) { appendChildren(node, children); return node }
	};

	/* --- poll --- */
	var poll = {
		fns: [],
		add: function(fn, interval) {
			poll.fns.push({ fn: fn, timer: setInterval(fn, (interval || 5) * 1000) });
		}
	};

	/* --- uci: an in-memory configuration from window.STUB_UCI --- */
	var uciState = null, uciCounter = 0;
	function confData(conf) {
		if (!uciState)
			uciState = JSON.parse(JSON.stringify(G.STUB_UCI || {}));
		return uciState[conf] || (uciState[conf] = []);
	}
	function findSection(conf, sid) {
		var list = confData(conf);
		for (var i = 0; i < list.length; i++)
			if (list[i]['.name'] == sid)
				return list[i];
		return null;
	}
	var uci = {
		load: function(conf) { confData(conf); return Promise.resolve(conf) },
		sections: function(conf, type, cb) {
			var out = confData(conf).filter(function(s) { return type == null || s['.type'] == type });
			if (cb)
				out.forEach(cb);
			return out;
		},
		get: function(conf, sid, opt) {
			var s = findSection(conf, sid);
			if (opt == null)
				return s;
			return s ? s[opt] : null;
		},
		set: function(conf, sid, opt, val) {
			var s = findSection(conf, sid);
			if (!s)
				return;
			if (val == null || val === '' || (Array.isArray(val) && val.length == 0))
				delete s[opt];
			else
				s[opt] = val;
		},
		unset: function(conf, sid, opt) { uci.set(conf, sid, opt, null) },
		add: function(conf, type, name) {
			var sid = name || ('cfg' + (++uciCounter).toString(16).padStart(4, '0') + 'ab');
			confData(conf).push({ '.type': type, '.name': sid, '.anonymous': !name });
			return sid;
		},
		remove: function(conf, sid) {
			var list = confData(conf), s = findSection(conf, sid);
			if (s)
				list.splice(list.indexOf(s), 1);
		},
		save: function() { return Promise.resolve() },
		apply: function() { return Promise.resolve() },
		dump: function() { return uciState }
	};

	/* --- rpc: answers from window.STUB_UBUS[object][method] (a result, a ubus status code, or a function) --- */
	var UBUS_TEXT = [ 'Command OK', 'Invalid command', 'Invalid argument', 'Method not found',
		'Resource not found', 'No data received', 'Permission denied', 'Request timeout',
		'Not supported', 'Unspecified error', 'Connection lost' ];
	var rpc = {
		declare: function(opts) {
			return function() {
				var args = Array.prototype.slice.call(arguments), params = {};
				(opts.params || []).forEach(function(p, i) { params[p] = args[i] });
				(G.STUB_CALLS = G.STUB_CALLS || []).push({ object: opts.object, method: opts.method, params: params });
				return new Promise(function(resolve, reject) {
					setTimeout(function() {
						var obj = (G.STUB_UBUS || {})[opts.object], answer = obj ? obj[opts.method] : 4;
						if (obj && answer === undefined)
							answer = 3;
						if (typeof answer == 'function')
							answer = answer(params);
						if (typeof answer == 'number' && answer != 0) {
							if (opts.reject)
								return reject(new Error('RPC call to %s/%s failed with ubus code %d: %s'.format(
									opts.object, opts.method, answer, UBUS_TEXT[answer] || 'Unknown error code')));
							return resolve(answer);
						}
						var ret = JSON.parse(JSON.stringify(answer));
						if (opts.expect) {
							var key = Object.keys(opts.expect)[0];
							if (ret != null && key != '')
								ret = ret[key];
							if (ret == null || Object.prototype.toString.call(ret) != Object.prototype.toString.call(opts.expect[key]))
								ret = opts.expect[key];
						}
						resolve(typeof opts.filter == 'function' ? opts.filter(ret, params) : ret);
					}, G.STUB_RPC_DELAY || 10);
				});
			};
		}
	};

	/* --- ui --- */
	var ui = {
		showModal: function(title, children) {
			var overlay = document.getElementById('modal_overlay');
			if (!overlay) {
				overlay = E('div', { 'id': 'modal_overlay' }, E('div', { 'class': 'modal', 'role': 'dialog' }));
				document.body.appendChild(overlay);
			}
			var modal = overlay.firstChild;
			dom.content(modal, [ title ? E('h4', {}, title) : '' ].concat(children));
			document.body.classList.add('modal-overlay-active');
			return modal;
		},
		hideModal: function() {
			document.body.classList.remove('modal-overlay-active');
		},
		addNotification: function(title, children, type) {
			var msg = E('div', { 'class': 'alert-message ' + (type || '') }, [ title ? E('h4', {}, title) : '', children ]);
			var main = document.getElementById('maincontent');
			main.insertBefore(msg, main.firstChild);
			return msg;
		},
		createHandlerFn: function(ctx, fn) {
			var extra = Array.prototype.slice.call(arguments, 2);
			if (typeof fn == 'string')
				fn = ctx[fn];
			return function(ev) {
				var btn = ev.currentTarget;
				btn.classList.add('spinning');
				btn.disabled = true;
				return Promise.resolve(fn.apply(ctx, extra.concat([ ev ]))).finally(function() {
					btn.classList.remove('spinning');
					btn.disabled = false;
				});
			};
		}
	};

	/* --- form --- */
	var form = {};

	var AbstractValue = Baseclass.extend({
		__init__: function(section, option, title, description) {
			this.section = section;
			this.map = section.map;
			this.option = option;
			this.title = title || '';
			this.description = description || '';
			this.deps = [];
			this.rmempty = true;
			this.keylist = [];
			this.vallist = [];
			this.widgets = {};
		},
		depends: function(key, val) {
			var d = isObject(key) ? key : {};
			if (!isObject(key))
				d[key] = val;
			this.deps.push(d);
		},
		value: function(key, label) {
			this.keylist.push(String(key));
			this.vallist.push(label != null ? label : String(key));
		},
		cfgvalue: function(sid) { return uci.get(this.map.config, sid, this.option) },
		formvalue: function(sid) { return this.widgets[sid] ? this.widgets[sid].getValue() : null },
		textvalue: function(sid) {
			var v = this.cfgvalue(sid);
			if (v == null || v === '')
				v = this.default;
			var i = this.keylist.indexOf(String(v));
			return (v == null || v === '') ? '-' : (i >= 0 ? this.vallist[i] : Array.isArray(v) ? v.join(', ') : String(v));
		},
		write: function(sid, v) { uci.set(this.map.config, sid, this.option, v) },
		remove: function(sid) { uci.unset(this.map.config, sid, this.option) },
		/* the value a widget starts with */
		startValue: function(sid) {
			var v = this.cfgvalue(sid);
			return (v == null || v === '') ? this.default : v;
		},
		isActive: function(sid) {
			if (this.deps.length == 0)
				return true;
			var section = this.section;
			return this.deps.some(function(d) {
				return Object.keys(d).every(function(k) {
					var v = section.formvalue(sid, k);
					if (v == null)
						v = section.cfgvalue(sid, k);
					if (v == null || v === '') {
						var o = section.child(k);
						v = o ? o.default : v;
					}
					return String(v) == String(d[k]);
				});
			});
		},
		check: function(sid, value) {
			if (typeof this.validate != 'function')
				return true;
			var self = this;
			var values = (this.multivalue && Array.isArray(value)) ? (value.length ? value : [ '' ]) : [ value ];
			for (var i = 0; i < values.length; i++) {
				var r = self.validate(sid, values[i]);
				if (r !== true)
					return r;
			}
			return true;
		},
		/* Builds { node, getValue } for this option in section sid. */
		widget: function(sid) {
			var v = this.startValue(sid), self = this;
			var input = E('input', {
				'type': this.password ? 'password' : 'text',
				'class': 'cbi-input-text',
				'placeholder': this.placeholder || '',
				'value': v == null ? '' : v
			});
			var node = this.password
				? E('div', { 'class': 'control-group' }, [ input, E('button', { 'class': 'cbi-button cbi-button-neutral', 'title': 'Reveal/hide password',
					'click': function(ev) { ev.preventDefault(); input.type = input.type == 'password' ? 'text' : 'password' } }, '∗') ])
				: input;
			return { node: node, input: input, getValue: function() { return input.value } };
		},
		renderRow: function(sid) {
			var w = this.widget(sid), self = this;
			this.widgets[sid] = w;
			var err = E('div', { 'class': 'cbi-value-error' });
			var row = E('div', { 'class': 'cbi-value', 'data-name': this.option, 'id': 'cbid.' + this.map.config + '.' + sid + '.' + this.option }, [
				E('label', { 'class': 'cbi-value-title' }, this.title),
				E('div', { 'class': 'cbi-value-field' }, [
					w.node, err,
					(this.description && !this.section.nodescriptions) || (this.description && this.map.inModal)
						? E('div', { 'class': 'cbi-value-description' }, this.description) : ''
				])
			]);
			w.row = row;
			w.validateNow = function() {
				var r = self.isActive(sid) ? self.check(sid, w.getValue()) : true;
				var bad = (r !== true);
				(w.input || w.node).classList.toggle('cbi-input-invalid', bad);
				row.classList.toggle('cbi-value-invalid', bad);
				dom.content(err, bad ? r : '');
				w.error = bad ? r : null;
				return !bad;
			};
			w.updateDepends = function() { row.style.display = self.isActive(sid) ? '' : 'none' };
			row.addEventListener('input', function() { self.section.refresh(sid) });
			row.addEventListener('change', function() { self.section.refresh(sid) });
			return row;
		}
	});

	form.Value = AbstractValue.extend({});

	form.DummyValue = AbstractValue.extend({
		renderRow: function(sid) {
			var v = this.cfgvalue(sid);
			return E('div', { 'class': 'cbi-value' }, [
				E('label', { 'class': 'cbi-value-title' }, this.title),
				E('div', { 'class': 'cbi-value-field' }, E('div', { 'class': 'cbi-value-description' }, v != null ? v : this.default))
			]);
		}
	});

	form.Flag = AbstractValue.extend({
		__init__: function() {
			AbstractValue.prototype.__init__.apply(this, arguments);
			this.enabled = '1';
			this.disabled = '0';
			this.default = '0';
		},
		widget: function(sid) {
			var self = this, v = this.startValue(sid);
			var input = E('input', { 'type': 'checkbox', 'class': 'cbi-checkbox' });
			input.checked = String(v) == this.enabled;
			return { node: E('div', { 'class': 'cbi-checkbox-wrap' }, input), input: input,
				getValue: function() { return input.checked ? self.enabled : self.disabled } };
		},
		textvalue: function(sid) {
			return String(this.startValue(sid)) == this.enabled ? '✓' : '✗';
		}
	});

	form.ListValue = AbstractValue.extend({
		widget: function(sid) {
			var v = String(this.startValue(sid) == null ? '' : this.startValue(sid));
			var self = this;
			var select = E('select', { 'class': 'cbi-input-select' }, this.keylist.map(function(k, i) {
				return E('option', { 'value': k, 'selected': k == v ? true : null }, self.vallist[i]);
			}));
			return { node: select, input: select, getValue: function() { return select.value } };
		}
	});

	form.DynamicList = AbstractValue.extend({
		multivalue: true,
		widget: function(sid) {
			var values = L.toArray(this.startValue(sid)), self = this;
			var list = E('div', { 'class': 'cbi-dynlist' });
			var addItem = function(v) {
				var item = E('div', { 'class': 'item' }, [
					E('span', {}, v),
					E('span', { 'class': 'remove', 'click': function() { item.remove(); self.section.refresh(sid) } }, '×')
				]);
				item.dataset.value = v;
				list.insertBefore(item, adder);
			};
			var input = E('input', { 'type': 'text', 'class': 'cbi-input-text', 'placeholder': this.placeholder || '' });
			var adder = E('div', { 'class': 'add-item control-group' }, [ input,
				E('button', { 'class': 'cbi-button cbi-button-add', 'click': function(ev) {
					ev.preventDefault();
					if (input.value.trim() != '') { addItem(input.value.trim()); input.value = ''; self.section.refresh(sid) }
				} }, '+') ]);
			list.appendChild(adder);
			values.forEach(addItem);
			return { node: list, input: input, getValue: function() {
				var out = Array.prototype.map.call(list.querySelectorAll('.item'), function(i) { return i.dataset.value });
				if (input.value.trim() != '')
					out.push(input.value.trim());
				return out;
			} };
		}
	});

	/* --- sections --- */
	var AbstractSection = Baseclass.extend({
		__init__: function(map, title, description) {
			this.map = map;
			this.title = title || '';
			this.description = description || '';
			this.children = [];
			this.tabs = null;
		},
		tab: function(name, title) {
			(this.tabs = this.tabs || []).push({ name: name, title: title, children: [] });
		},
		option: function(cls, option, title, description) {
			var o = new cls(this, option, title, description);
			this.children.push(o);
			return o;
		},
		taboption: function(tab, cls, option, title, description) {
			var o = this.option(cls, option, title, description);
			this.tabs.filter(function(t) { return t.name == tab })[0].children.push(o);
			return o;
		},
		child: function(name) { return this.children.filter(function(o) { return o.option == name })[0] },
		formvalue: function(sid, name) { var o = this.child(name); return o ? o.formvalue(sid) : null },
		cfgvalue: function(sid, name) { var o = this.child(name); return o ? o.cfgvalue(sid) : uci.get(this.map.config, sid, name) },
		cfgsections: function() {
			return uci.sections(this.map.config, this.sectiontype).map(function(s) { return s['.name'] });
		},
		/* re-run depends and every validation of a section after a change */
		refresh: function(sid) {
			this.children.forEach(function(o) { var w = o.widgets[sid]; if (w && w.updateDepends) w.updateDepends() });
			this.children.forEach(function(o) { var w = o.widgets[sid]; if (w && w.validateNow) w.validateNow() });
		},
		renderOptions: function(sid, children) {
			var rows = E('div', { 'class': 'cbi-section-node' }, children.map(function(o) { return o.renderRow(sid) }));
			return rows;
		},
		renderHead: function() {
			return [ this.title ? E('h3', {}, this.title) : '', this.description ? E('div', { 'class': 'cbi-section-descr' }, this.description) : '' ];
		}
	});

	form.NamedSection = AbstractSection.extend({
		__init__: function(map, name, type, title, description) {
			AbstractSection.prototype.__init__.call(this, map, title, description);
			this.sectionname = name;
			this.sectiontype = type;
		},
		render: function() {
			var sid = this.sectionname, self = this;
			if (!uci.get(this.map.config, sid))
				return E('div', { 'class': 'cbi-section' }, this.renderHead());
			var body;
			if (this.tabs) {
				var active = G.STUB_TAB || this.tabs[0].name;
				var panes = this.tabs.map(function(t) {
					var pane = self.renderOptions(sid, t.children);
					pane.setAttribute('data-tab', t.name);
					pane.style.display = t.name == active ? '' : 'none';
					return pane;
				});
				var menu = E('ul', { 'class': 'cbi-tabmenu' }, this.tabs.map(function(t) {
					return E('li', { 'class': 'cbi-tab' + (t.name == active ? '' : '-disabled'), 'data-tab': t.name, 'click': function() {
						menu.querySelectorAll('li').forEach(function(li) { li.className = li.dataset.tab == t.name ? 'cbi-tab' : 'cbi-tab-disabled' });
						panes.forEach(function(p) { p.style.display = p.dataset.tab == t.name ? '' : 'none' });
					} }, E('a', { 'href': '#' }, t.title));
				}));
				body = [ menu ].concat(panes);
			}
			else {
				body = this.renderOptions(sid, this.children);
			}
			var node = E('div', { 'class': 'cbi-section', 'id': 'cbi-' + this.map.config + '-' + sid }, this.renderHead().concat(body));
			this.map.rendered.push([ this, sid ]);
			return node;
		}
	});

	form.TypedSection = AbstractSection.extend({
		__init__: function(map, type, title, description) {
			AbstractSection.prototype.__init__.call(this, map, title, description);
			this.sectiontype = type;
		},
		renderAdd: function(container) {
			var self = this;
			if (!this.addremove)
				return '';
			var name = E('input', { 'type': 'text', 'class': 'cbi-section-create-name', 'placeholder': _('New section name') });
			return E('div', { 'class': 'cbi-section-create' }, [
				this.anonymous ? '' : name,
				E('button', { 'class': 'cbi-button cbi-button-add', 'click': function(ev) {
					ev.preventDefault();
					uci.add(self.map.config, self.sectiontype, self.anonymous ? null : name.value.trim());
					self.map.rerender();
				} }, _('Add'))
			]);
		},
		render: function() {
			var self = this, sids = this.cfgsections();
			var nodes = sids.map(function(sid) {
				self.map.rendered.push([ self, sid ]);
				return E('div', { 'class': 'cbi-section-node-wrap' }, [
					self.anonymous ? '' : E('h4', {}, sid),
					self.renderOptions(sid, self.children),
					self.addremove ? E('div', { 'class': 'cbi-section-remove right' }, E('button', { 'class': 'cbi-button cbi-button-remove',
						'click': function(ev) { ev.preventDefault(); uci.remove(self.map.config, sid); self.map.rerender() } }, _('Delete'))) : ''
				]);
			});
			if (sids.length == 0)
				nodes.push(E('em', {}, _('This section contains no values yet')));
			return E('div', { 'class': 'cbi-section', 'id': 'cbi-' + this.map.config + '-' + this.sectiontype },
				this.renderHead().concat(nodes, [ this.renderAdd() ]));
		}
	});

	form.GridSection = form.TypedSection.extend({
		render: function() {
			var self = this, sids = this.cfgsections();
			var cols = this.children.filter(function(o) { return !o.modalonly });
			var head = E('tr', { 'class': 'tr table-titles' }, [ this.anonymous ? '' : E('th', { 'class': 'th' }, _('Name')) ]
				.concat(cols.map(function(o) { return E('th', { 'class': 'th' }, o.title) }), [ E('th', { 'class': 'th cbi-section-actions' }, '') ]));
			var rows = sids.map(function(sid) {
				return E('tr', { 'class': 'tr cbi-section-table-row', 'data-sid': sid }, [ self.anonymous ? '' : E('td', { 'class': 'td' }, E('strong', {}, sid)) ]
					.concat(cols.map(function(o) { return E('td', { 'class': 'td', 'data-name': o.option }, o.isActive(sid) ? o.textvalue(sid) : '-') }), [
						E('td', { 'class': 'td cbi-section-actions' }, [
							E('button', { 'class': 'cbi-button cbi-button-edit', 'click': function(ev) { ev.preventDefault(); self.renderModal(sid) } }, _('Edit')),
							' ',
							self.addremove ? E('button', { 'class': 'cbi-button cbi-button-remove', 'click': function(ev) {
								ev.preventDefault(); uci.remove(self.map.config, sid); self.map.rerender() } }, _('Delete')) : ''
						])
					]));
			});
			if (sids.length == 0)
				rows.push(E('tr', { 'class': 'tr placeholder' }, E('td', { 'class': 'td', 'colspan': cols.length + 2 }, E('em', {}, _('This section contains no values yet')))));
			return E('div', { 'class': 'cbi-section', 'id': 'cbi-' + this.map.config + '-' + this.sectiontype }, this.renderHead().concat([
				E('table', { 'class': 'table cbi-section-table' }, [ head ].concat(rows)),
				this.renderAdd()
			]));
		},
		renderModal: function(sid) {
			var self = this;
			this.map.inModal = true;
			var body = this.renderOptions(sid, this.children);
			this.map.inModal = false;
			ui.showModal((this.modaltitle || this.title) + ' » ' + sid, [
				body,
				E('div', { 'class': 'right' }, [
					E('button', { 'class': 'cbi-button', 'click': function() { ui.hideModal() } }, _('Dismiss')), ' ',
					E('button', { 'class': 'cbi-button cbi-button-positive important', 'click': function() {
						if (self.map.saveSection(self, sid)) { ui.hideModal(); self.map.rerender() }
					} }, _('Save'))
				])
			]);
			this.refresh(sid);
		}
	});

	form.Map = Baseclass.extend({
		__init__: function(config, title, description) {
			this.config = config;
			this.title = title || '';
			this.description = description || '';
			this.children = [];
			this.rendered = [];
		},
		section: function(cls) {
			var s = new (Function.prototype.bind.apply(cls, [ null, this ].concat(Array.prototype.slice.call(arguments, 1))))();
			this.children.push(s);
			return s;
		},
		renderContents: function() {
			var self = this;
			this.rendered = [];
			var node = E('div', { 'class': 'cbi-map', 'id': 'cbi-' + this.config }, [
				this.title ? E('h2', { 'name': 'content' }, this.title) : '',
				this.description ? E('div', { 'class': 'cbi-map-descr' }, this.description) : ''
			].concat(this.children.map(function(s) { return s.render() })));
			node.__map = this;
			setTimeout(function() { self.rendered.forEach(function(r) { r[0].refresh(r[1]) }) }, 0);
			return node;
		},
		render: function() {
			var self = this;
			return uci.load(this.config).then(function() {
				self.root = self.renderContents();
				return self.root;
			});
		},
		rerender: function() {
			var fresh = this.renderContents();
			this.root.replaceWith(fresh);
			this.root = fresh;
		},
		/* validate and write one section; false when a value is invalid */
		saveSection: function(section, sid) {
			var ok = true;
			section.refresh(sid);
			section.children.forEach(function(o) { var w = o.widgets[sid]; if (w && w.error) ok = false });
			if (!ok)
				return false;
			section.children.forEach(function(o) {
				var w = o.widgets[sid];
				if (!w || !w.getValue)
					return;
				var fval = o.isActive(sid) ? w.getValue() : null, cval = o.cfgvalue(sid);
				if (JSON.stringify(fval) == JSON.stringify(cval))
					return;
				if (fval == null || ((fval === '' || (Array.isArray(fval) && !fval.length) || fval == o.default) && o.rmempty))
					o.remove(sid);
				else
					o.write(sid, fval);
			});
			return true;
		},
		save: function() {
			var self = this, ok = true;
			this.rendered.forEach(function(r) { if (!self.saveSection(r[0], r[1])) ok = false });
			return ok ? Promise.resolve() : Promise.reject(new Error(_('Some fields are invalid, cannot save values!')));
		}
	});

	/* --- tools.widgets: DeviceSelect lists window.STUB_DEVICES --- */
	var widgets = {
		DeviceSelect: form.Value.extend({
			multivalue: true,
			widget: function(sid) {
				var v = L.toArray(this.startValue(sid)), devs = G.STUB_DEVICES || [], self = this;
				var names = devs.map(function(d) { return d.name });
				v.forEach(function(n) { if (names.indexOf(n) < 0) devs = devs.concat([ { name: n, type: 'missing' } ]) });
				var boxes = devs.map(function(d) {
					var cb = E('input', { 'type': 'checkbox', 'value': d.name });
					cb.checked = v.indexOf(d.name) >= 0;
					return E('li', {}, E('label', {}, [ cb, ' ', E('span', { 'class': 'ifacebadge' }, d.name),
						d.networks && d.networks.length ? E('small', {}, ' (' + d.networks.join(', ') + ')') : '' ]));
				});
				var summary = E('span', { 'class': 'summary' });
				var list = E('ul', { 'class': 'dropdown-list' }, boxes);
				var node = E('div', { 'class': 'cbi-dropdown', 'tabindex': 0, 'click': function(ev) {
					if (ev.target == node || ev.target.parentNode == summary || ev.target == summary) node.classList.toggle('open');
				} }, [ summary, E('span', { 'class': 'open-indicator' }, '▾'), list ]);
				var get = function() {
					return Array.prototype.filter.call(node.querySelectorAll('input'), function(c) { return c.checked }).map(function(c) { return c.value });
				};
				var paint = function() {
					dom.content(summary, get().length ? get().map(function(n) { return E('span', { 'class': 'ifacebadge' }, n) }) : E('em', {}, _('unspecified')));
				};
				node.addEventListener('change', paint);
				paint();
				return { node: node, getValue: get };
			},
			textvalue: function(sid) { return L.toArray(this.startValue(sid)).join(', ') }
		})
	};

	var View = Baseclass.extend({
		load: function() { return Promise.resolve() },
		render: function() { return E('div') },
		/* as LuCI's view: save every form.Map on the page, then apply */
		handleSaveApply: function() {
			return Promise.all(Array.prototype.map.call(document.querySelectorAll('#maincontent .cbi-map'), function(node) {
				return node.__map.save();
			})).then(function() { return uci.save() }).then(function() { return uci.apply() }).catch(function(e) {
				ui.addNotification(null, E('p', {}, e.message), 'error');
			});
		},
		handleSave: function() { return Promise.resolve() },
		handleReset: function() { return Promise.resolve() }
	});

	var modules = {
		'baseclass': Baseclass, 'view': View, 'form': form, 'uci': uci, 'rpc': rpc, 'ui': ui,
		'dom': dom, 'poll': poll, 'tools.widgets': widgets
	};

	/* Compiles a LuCI module the way LuCI's loader does: its leading 'require X [as Y]'
	 * directives become parameters, the source becomes a function body that returns the
	 * module. */
	function compile(src, name) {
		var names = [], mods = [], re = /^\s*(?:'use strict';\s*)?'require ([a-z0-9_.]+)(?: as ([a-zA-Z_]+))?';/, body = src, m;
		while ((m = re.exec(body)) != null) {
			var mod = m[1], alias = m[2] || mod.replace(/.*\./, '');
			if (!modules.hasOwnProperty(mod))
				throw new Error(name + ': the stand-in has no module ' + mod);
			names.push(alias);
			mods.push(modules[mod]);
			body = body.substring(m[0].length);
		}
		var fn = new Function(names.join(','), '"use strict";\n' + src + '\n//# sourceURL=' + name);
		return fn.apply(G, mods);
	}

	/* Loads view NAME (e.g. tgtun/status) into #view, with LuCI's page footer. */
	function boot(name) {
		var main = document.getElementById('view');
		return fetch('/luci-static/resources/view/' + name + '.js').then(function(r) {
			if (!r.ok) throw new Error('cannot load view ' + name + ': HTTP ' + r.status);
			return r.text();
		}).then(function(src) {
			var V = compile(src, 'view/' + name + '.js'), v = new V();
			G.STUB_VIEW = v;
			return Promise.resolve(v.load()).then(function(data) { return v.render(data) }).then(function(node) {
				dom.content(main, node);
				if (v.handleSaveApply !== null || v.handleSave !== null)
					main.appendChild(E('div', { 'class': 'cbi-page-actions' }, [
						E('button', { 'class': 'cbi-button cbi-button-apply', 'click': function() { v.handleSaveApply() } }, _('Save & Apply')), ' ',
						E('button', { 'class': 'cbi-button cbi-button-save' }, _('Save')), ' ',
						E('button', { 'class': 'cbi-button cbi-button-reset' }, _('Reset'))
					]));
				G.__rendered = true;
			});
		}).catch(function(e) {
			G.__error = String(e && e.stack || e);
			main.appendChild(E('pre', { 'class': 'alert-message error' }, G.__error));
		});
	}

	G.LuCIStub = { compile: compile, boot: boot, modules: modules, uci: uci, poll: poll };
})(typeof window != 'undefined' ? window : globalThis);
