'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require uci';

// Status > ACP: a read-only view of the ubus object "acp" that acpd registers (the same
// answers as `acpctl ... --json`). Every call degrades to "no information" when acpd or its
// ubus bridge is not running.

var callStatus = rpc.declare({ object: 'acp', method: 'status' });
var callNeighbors = rpc.declare({ object: 'acp', method: 'neighbors', expect: { neighbors: [] } });
var callChannels = rpc.declare({ object: 'acp', method: 'channels', expect: { channels: [] } });
var callRpl = rpc.declare({ object: 'acp', method: 'rpl' });
var callBrski = rpc.declare({ object: 'acp', method: 'brski' });

function fetchAll() {
	return Promise.all([
		L.resolveDefault(callStatus(), {}),
		L.resolveDefault(callNeighbors(), []),
		L.resolveDefault(callChannels(), []),
		L.resolveDefault(callRpl(), {}),
		L.resolveDefault(callBrski(), {})
	]);
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

function section(title, content) {
	return E('div', { 'class': 'cbi-section' }, [E('h3', {}, title)].concat(content));
}

function nodeSection(status, rpl, brski) {
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
	if (status.error)
		rows.push([_('Error'), status.error]);
	return section(_('Node'), [table([_('Property'), _('Value')], rows,
		_('acpd is not running'))]);
}

function neighborSection(neighbors) {
	return section(_('Neighbours'), [table(
		[_('Link-local address'), _('Interface'), _('Methods'), _('Expires in')],
		neighbors.map(function(n) {
			return [text(n.peer), text(n.interface), text(n.methods),
				n.ttl_s != null ? '%t'.format(n.ttl_s) : '-'];
		}),
		_('No neighbour heard'))]);
}

function channelSection(channels) {
	return section(_('Secure channels'), [table(
		[_('Interface'), _('Peer'), _('Peer node name'), _('State'), _('Role'), _('IKE / child SAs'),
			_('Traffic')],
		channels.map(function(c) {
			return [text(c.interface), text(c.peer), text(c.peer_node_name), text(c.state),
				text(c.role), '%d / %d'.format(c.ike_sas || 0, c.child_sas || 0),
				c.bytes != null ? '%1024.2mB'.format(c.bytes) : '-'];
		}),
		_('No secure channel'))]);
}

function rplSection(rpl) {
	var summary = table([_('Property'), _('Value')], [
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
		E('h4', {}, _('Children')), children]);
}

function renderAll(data) {
	return [nodeSection(data[0], data[3], data[4]), neighborSection(data[1]),
		channelSection(data[2]), rplSection(data[3])];
}

return view.extend({
	load: function() {
		return Promise.all([uci.load('acp'), fetchAll()]);
	},

	render: function(loaded) {
		var body = E('div', {}, renderAll(loaded[1]));
		poll.add(function() {
			return fetchAll().then(function(data) {
				dom.content(body, renderAll(data));
			});
		}, 5);
		return E([], [
			E('h2', {}, _('Autonomic Control Plane')),
			E('div', { 'class': 'cbi-map-descr' },
				_('The ACP node (RFC 8994): its identity, neighbours, secure channels and RPL routing.')),
			body
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
