'use strict';
'require baseclass';

// The ACP map (ubus `acp map`, docs/acpmap.md) as an SVG picture, built in the browser.
// Plain DOM (createElementNS), no other LuCI module, so the picture can be tested alone
// (tests/browser/). Nodes are placed in rows by their depth in the RPL DODAG (a node under its
// preferred parent; a node whose parent is not on the map by how many hops away it was
// learnt); grey lines are secure channels (dashed: only one end reports it), blue arrows point
// from a node to its preferred RPL parent. ubus drops null values: every field may be absent.

var SVG_NS = 'http://www.w3.org/2000/svg';
var COL = 170, ROW = 110, PAD = 50, R = 20;
var FILL = { root: '#f5c242', attached: '#6cc070', detached: '#f0a04b', 'no-rpl': '#b0c4de' };

function el(name, attrs, children) {
	var node = document.createElementNS(SVG_NS, name);
	for (var key in attrs)
		if (attrs[key] != null)
			node.setAttribute(key, String(attrs[key]));
	(children || []).forEach(function(child) {
		node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
	});
	return node;
}

// the last two groups of an address (e.g. "::1:a"), for a label that fits
function shortAddress(address) {
	var groups = String(address).split(':').filter(function(g) { return g !== ''; });
	return '…:' + groups.slice(-2).join(':');
}

// row of each node: depth under its RPL parent chain, else its hops
function levels(nodes) {
	var byAddress = {}, level = {};
	nodes.forEach(function(n) { byAddress[n.address] = n; });
	function depth(n, seen) {
		if (level[n.address] != null)
			return level[n.address];
		var parent = n.parent != null ? byAddress[n.parent] : null;
		var d;
		if (parent && !seen[parent.address]) {
			seen[n.address] = true;
			d = depth(parent, seen) + 1;
		}
		else
			d = n.state === 'root' ? 0 : (n.hops || 0);
		level[n.address] = d;
		return d;
	}
	nodes.forEach(function(n) { depth(n, {}); });
	return level;
}

function layout(nodes) {
	var level = levels(nodes), rows = [], pos = {};
	nodes.forEach(function(n) {
		var l = level[n.address];
		(rows[l] = rows[l] || []).push(n);
	});
	rows = rows.filter(function(r) { return r && r.length; });
	var widest = Math.max.apply(null, [1].concat(rows.map(function(r) { return r.length; })));
	var width = widest * COL + 2 * PAD;
	rows.forEach(function(row, y) {
		var offset = (width - row.length * COL) / 2 + COL / 2;
		row.forEach(function(n, x) {
			pos[n.address] = { x: offset + x * COL, y: PAD + y * ROW };
		});
	});
	return { pos: pos, width: width, height: rows.length * ROW + PAD };
}

function title(n) {
	var lines = [n.address];
	if (n.name) lines.push(n.name);
	if (n.roles && n.roles.length) lines.push('roles: ' + n.roles.join(', '));
	lines.push('state: ' + (n.reached ? (n.state || '-') : 'not reached' + (n.error ? ' (' + n.error + ')' : '')));
	if (n.rank != null) lines.push('rank: ' + n.rank);
	return lines.join('\n');
}

// The picture of one `map` answer: an <svg> element.
function render(map) {
	var nodes = (map && Array.isArray(map.nodes)) ? map.nodes.filter(function(n) {
		return n && typeof n.address === 'string';
	}) : [];
	var box = layout(nodes), pos = box.pos;
	var svg = el('svg', { xmlns: SVG_NS, 'class': 'acp-map', width: box.width, height: box.height,
		viewBox: '0 0 ' + box.width + ' ' + box.height, role: 'img',
		'aria-label': 'ACP map: ' + nodes.length + ' nodes' });
	svg.appendChild(el('defs', {}, [el('marker', { id: 'acp-map-arrow', viewBox: '0 0 10 10',
		refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
		[el('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#2a6fdb' })])]));
	var channels = el('g', { 'class': 'acp-channels' });
	((map && map.channels) || []).forEach(function(c) {
		var a = pos[c.a], b = pos[c.b];
		if (!a || !b)
			return;
		channels.appendChild(el('line', { 'class': 'acp-channel', 'data-a': c.a, 'data-b': c.b,
			x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: '#888', 'stroke-width': 3,
			'stroke-dasharray': c.confirmed ? null : '6 4' },
			[el('title', {}, ['secure channel ' + c.a + ' – ' + c.b +
				(c.confirmed ? '' : ' (reported by one end)')])]));
	});
	svg.appendChild(channels);
	var parents = el('g', { 'class': 'acp-parents' });
	((map && map.parents) || []).forEach(function(p) {
		var a = pos[p.child], b = pos[p.parent];
		if (!a || !b)
			return;
		// from the child's rim to the parent's rim, a little to the side of the channel line
		var dx = b.x - a.x, dy = b.y - a.y, len = Math.sqrt(dx * dx + dy * dy) || 1;
		var ox = -dy / len * 5, oy = dx / len * 5;
		parents.appendChild(el('line', { 'class': 'acp-parent', 'data-child': p.child,
			'data-parent': p.parent,
			x1: a.x + dx / len * R + ox, y1: a.y + dy / len * R + oy,
			x2: b.x - dx / len * (R + 2) + ox, y2: b.y - dy / len * (R + 2) + oy,
			stroke: '#2a6fdb', 'stroke-width': 2, 'marker-end': 'url(#acp-map-arrow)' },
			[el('title', {}, ['RPL parent of ' + p.child + ': ' + p.parent])]));
	});
	svg.appendChild(parents);
	var group = el('g', { 'class': 'acp-nodes' });
	nodes.forEach(function(n) {
		var p = pos[n.address];
		var fill = n.reached ? (FILL[n.state] || '#ddd') : '#fff';
		var label = [shortAddress(n.address)];
		var roles = (n.roles || []).map(function(r) { return r === 'registrar' ? 'R' : (r === 'root' ? '⊤' : r); });
		group.appendChild(el('g', { 'class': 'acp-node' + (n.reached ? '' : ' acp-unreached') +
			(n.origin ? ' acp-origin' : ''), 'data-address': n.address,
			'data-state': n.reached ? (n.state || '') : 'unreached' }, [
			el('title', {}, [title(n)]),
			el('circle', { cx: p.x, cy: p.y, r: R, fill: fill,
				stroke: n.origin ? '#000' : (n.reached ? '#555' : '#c33'),
				'stroke-width': n.origin ? 3 : 1.5, 'stroke-dasharray': n.reached ? null : '4 3' }),
			el('text', { x: p.x, y: p.y + 5, 'text-anchor': 'middle', 'font-size': 13,
				'font-weight': 'bold' }, [roles.join('')]),
			// labels to the right: arrows and channels leave a node up and down
			el('text', { 'class': 'acp-node-label', x: p.x + R + 5, y: p.y - 2,
				'font-size': 11 }, label),
			el('text', { x: p.x + R + 5, y: p.y + 11, 'font-size': 10,
				fill: '#555' }, [n.reached ? (n.state || '') + (n.rank != null ? ' ' + n.rank : '')
					: 'not reached'])
		]));
	});
	svg.appendChild(group);
	return svg;
}

return baseclass.extend({
	render: render,
	levels: levels,
	shortAddress: shortAddress
});
