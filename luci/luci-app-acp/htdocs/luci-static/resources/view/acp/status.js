'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require uci';
'require acp.acpmap as acpmap';

// Status > ACP: a read-only view of the ubus object "acp" that acpd registers (the same
// answers as `acpctl ... --json`). A call that fails shows why (acpd not running, access
// denied, acpd's own error) instead of empty tables.

var callStatus = rpc.declare({ object: 'acp', method: 'status' });
var callNeighbors = rpc.declare({ object: 'acp', method: 'neighbors' });
var callChannels = rpc.declare({ object: 'acp', method: 'channels' });
var callRpl = rpc.declare({ object: 'acp', method: 'rpl' });
var callBrski = rpc.declare({ object: 'acp', method: 'brski' });
var callMap = rpc.declare({ object: 'acp', method: 'map' });

// One answer: { data: ..., error: null } or { data: fallback, error: 'why' }. acpd answers a
// refused request with { error: '...' }; rpc.js rejects on a ubus or JSON-RPC error.
function settle(promise, key, fallback) {
	return promise.then(function(reply) {
		if (reply && typeof reply.error === 'string')
			// a part that is not running (no RPL before enrolment) has no command: not an error
			return { data: fallback, error: /^unknown command/.test(reply.error) ? null : reply.error };
		var data = key ? (reply && reply[key]) : reply;
		return { data: data != null ? data : fallback, error: null };
	}, function(err) {
		var msg = (err && err.message) ? err.message : String(err);
		if (/not found/i.test(msg))
			msg = _('acpd is not running (ubus object "acp" not found)');
		else if (/access denied|permission denied/i.test(msg))
			msg = _('Access denied: log out and in again after installing luci-app-acp');
		return { data: fallback, error: msg };
	});
}

function fetchAll() {
	return Promise.all([
		settle(callStatus(), null, {}),
		settle(callNeighbors(), 'neighbors', []),
		settle(callChannels(), 'channels', []),
		settle(callRpl(), null, {}),
		settle(callBrski(), null, {})
	]);
}

function errorNote(answer) {
	return answer.error ? [E('p', { 'class': 'alert-message warning' },
		_('Could not read this: %s').format(answer.error))] : [];
}

function text(value) {
	if (value == null || value === '')
		return '-';
	if (Array.isArray(value))
		return value.length ? value.join(', ') : '-';
	return String(value);
}

function isOn(option) {
	return ['1', 'yes', 'on', 'true', 'enabled'].indexOf(uci.get('acp', 'main', option)) >= 0;
}

function table(titles, rows, empty) {
	var t = E('table', { 'class': 'table' }, [
		E('tr', { 'class': 'tr table-titles' }, titles.map(function(title) {
			return E('th', { 'class': 'th' }, title);
		}))
	]);
	cbi_update_table(t, rows, E('em', {}, empty));
	return t;
}

function section(title, content, answer) {
	return E('div', { 'class': 'cbi-section' },
		[E('h3', {}, title)].concat(answer ? errorNote(answer) : [], content));
}

function nodeSection(answer, rpl, brski) {
	var status = answer.data;
	var id = status.identity || {};
	var roles = [];
	if (isOn('registrar'))
		roles.push(_('registrar'));
	if (isOn('dodag_root') || rpl.role === 'root')
		roles.push(_('DODAG root'));
	if (!roles.length)
		roles.push(_('node'));
	var enrolment = status.enrolled ? _('enrolled (LDevID)') :
		(brski.state ? _('not enrolled') + ' (' + brski.state + ')' : _('not enrolled'));
	var rows = [
		[_('ACP node name'), text(id.acp_node_name)],
		[_('ACP address'), id.acp_address ? id.acp_address + '/' + text(id.prefix_length) : '-'],
		[_('ACP domain'), text(id.acp_domain)],
		[_('Role'), roles.join(', ')],
		[_('Enrolment'), enrolment],
		[_('Uptime'), status.uptime_s != null ? '%t'.format(status.uptime_s) : '-'],
		[_('Version'), text(status.version)]
	];
	return section(_('Node'), [table([_('Property'), _('Value')], rows,
		_('No information'))], answer);
}

function neighborSection(answer) {
	var neighbors = answer.data;
	return section(_('Neighbours'), [table(
		[_('Link-local address'), _('Interface'), _('Methods'), _('Expires in')],
		neighbors.map(function(n) {
			return [text(n.peer), text(n.interface), text(n.methods),
				n.ttl_s != null ? '%t'.format(n.ttl_s) : '-'];
		}),
		_('No neighbour heard'))], answer);
}

function channelSection(answer) {
	var channels = answer.data;
	return section(_('Secure channels'), [table(
		[_('Interface'), _('Peer'), _('Peer node name'), _('State'), _('Role'), _('IKE / child SAs'),
			_('Traffic')],
		channels.map(function(c) {
			return [text(c.interface), text(c.peer), text(c.peer_node_name), text(c.state),
				text(c.role), '%d / %d'.format(c.ike_sas || 0, c.child_sas || 0),
				c.bytes != null ? '%1024.2mB'.format(c.bytes) : '-'];
		}),
		_('No secure channel'))], answer);
}

function rplSection(answer) {
	var rpl = answer.data;
	var summary = table([_('Property'), _('Value')], rpl.role == null ? [] : [
		[_('Role'), text(rpl.role)],
		[_('Rank'), text(rpl.rank)],
		[_('DODAG ID'), text(rpl.dodag_id)],
		[_('Prefix'), text(rpl.prefix)]
	], _('RPL is not running'));
	var parents = table([_('Parent'), _('Interface'), _('Rank'), _('Preferred')],
		(rpl.parents || []).map(function(p) {
			return [text(p.address), text(p.ifname), text(p.rank), p.preferred ? _('yes') : _('no')];
		}),
		_('No parent'));
	var children = table([_('Child'), _('Interface'), _('Targets')],
		(rpl.children || []).map(function(c) {
			return [text(c.address), text(c.ifname), text(c.targets)];
		}),
		_('No child'));
	return section(_('RPL'), [summary, E('h4', {}, _('Parents')), parents,
		E('h4', {}, _('Children')), children], answer);
}

// The ACP at a glance: acpd gathers every node's report over the ACP (a few seconds, so it is
// asked less often than the rest); acp/acpmap.js draws it.
function mapSection(answer) {
	var map = answer.data || {};
	var nodes = map.nodes || [];
	var reached = nodes.filter(function(n) { return n.reached; }).length;
	var content = [];
	if (nodes.length) {
		content.push(E('p', {}, _('%d nodes (%d answered), %d secure channels, gathered in %.1f s%s').format(
			nodes.length, reached, (map.channels || []).length, map.duration_s || 0,
			map.complete ? '' : ' ' + _('(incomplete)'))));
		content.push(E('div', { 'style': 'overflow:auto' }, [acpmap.render(map)]));
		content.push(E('p', { 'class': 'cbi-value-description' },
			_('Circles: nodes (R registrar, ⊤ DODAG root; gold root, green attached, orange detached, dashed red not reached; this node outlined). Grey lines: secure channels (dashed: reported by one end). Blue arrows: preferred RPL parent.')));
		content.push(table([_('ACP address'), _('ACP node name'), _('Roles'), _('State'), _('Rank'),
			_('RPL parent'), _('Hops')],
			nodes.map(function(n) {
				return [text(n.address), text(n.name), text(n.roles),
					n.reached ? text(n.state) : _('not reached') + (n.error ? ' (' + n.error + ')' : ''),
					text(n.rank), text(n.parent), text(n.hops)];
			}), _('No node')));
	}
	else if (!answer.error)
		content.push(E('em', {}, _('No map: the node is not enrolled')));
	return section(_('ACP map'), content, answer);
}

function renderAll(data) {
	return [nodeSection(data[0], data[3].data, data[4].data), neighborSection(data[1]),
		channelSection(data[2]), rplSection(data[3])];
}

return view.extend({
	load: function() {
		return Promise.all([uci.load('acp'), fetchAll(), settle(callMap(), null, {})]);
	},

	render: function(loaded) {
		var body = E('div', {}, renderAll(loaded[1]));
		var mapBody = E('div', {}, [mapSection(loaded[2])]);
		poll.add(function() {
			return fetchAll().then(function(data) {
				dom.content(body, renderAll(data));
			});
		}, 5);
		poll.add(function() {
			return settle(callMap(), null, {}).then(function(answer) {
				dom.content(mapBody, [mapSection(answer)]);
			});
		}, 30);
		return E([], [
			E('h2', {}, _('Autonomic Control Plane')),
			E('div', { 'class': 'cbi-map-descr' },
				_('The ACP node (RFC 8994): its identity, neighbours, secure channels and RPL routing, and the whole ACP as seen from here.')),
			body, mapBody
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
