// steward dashboard: progressive enhancement only. Every page works
// without this script; with it, the parts of a page marked data-live
// reload in place when the hub reports a change (server-sent events from
// /ui/events), and copy buttons appear.
(function () {
	'use strict';

	var statusEl = document.getElementById('live-status');
	function say(text) {
		if (statusEl) statusEl.textContent = text;
	}

	function initCopy(root) {
		root.querySelectorAll('button[data-copy]').forEach(function (b) {
			if (!navigator.clipboard) return;
			b.hidden = false;
			b.addEventListener('click', function () {
				var el = document.getElementById(b.getAttribute('data-copy'));
				if (!el) return;
				navigator.clipboard.writeText(el.textContent).then(function () {
					say('Copied to the clipboard.');
				}, function () {
					say('Copying failed: select the text and copy it.');
				});
			});
		});
	}
	initCopy(document);

	if (!document.querySelector('[data-live]') || !window.EventSource || !window.fetch) return;

	var busy = false, again = false, timer = null, updates = 0;

	// focusKey names the focused element so that it can be focused again
	// in the fresh copy of its region.
	function focusKey() {
		var a = document.activeElement;
		if (!a || a === document.body) return null;
		if (a.id) return '#' + CSS.escape(a.id);
		if (a.getAttribute('href')) return 'a[href="' + CSS.escape(a.getAttribute('href')) + '"]';
		return null;
	}

	function refresh() {
		if (busy) { again = true; return; }
		busy = true;
		var key = focusKey();
		fetch(location.href, { credentials: 'same-origin', cache: 'no-store', headers: { 'Accept': 'text/html' } })
			.then(function (r) {
				if (r.redirected || r.status === 401) { location.reload(); throw new Error('logged out'); }
				if (!r.ok) throw new Error('status ' + r.status);
				return r.text();
			})
			.then(function (html) {
				var doc = new DOMParser().parseFromString(html, 'text/html');
				document.querySelectorAll('[data-live]').forEach(function (el) {
					var fresh = doc.getElementById(el.id);
					if (!fresh) return;
					fresh = document.importNode(fresh, true);
					el.replaceWith(fresh);
					initCopy(fresh);
				});
				if (key) {
					var f = document.querySelector(key);
					if (f) f.focus({ preventScroll: true });
				}
				updates++;
				document.documentElement.setAttribute('data-updates', String(updates));
				say('Updated at ' + new Date().toLocaleTimeString() + '.');
			})
			.catch(function () {})
			.finally(function () {
				busy = false;
				if (again) { again = false; schedule(); }
			});
	}

	function schedule() {
		clearTimeout(timer);
		timer = setTimeout(refresh, 150);
	}

	// A host's page follows that host only; the other pages every host.
	var scope = document.querySelector('[data-host]');
	var onlyHost = scope ? scope.getAttribute('data-host') : '';
	// A page may follow only some kinds of event (data-live-events): the
	// audit history follows the event log, not every changed report.
	var kinds = document.querySelector('[data-live-events]');
	var onlyKinds = kinds ? kinds.getAttribute('data-live-events').split(' ') : null;
	function onEvent(ev) {
		if (onlyKinds && onlyKinds.indexOf(ev.type) < 0) return;
		if (onlyHost) {
			try {
				var h = JSON.parse(ev.data).host;
				if (h && h !== onlyHost) return;
			} catch (e) { /* refresh anyway */ }
		}
		schedule();
	}

	var es = new EventSource('/ui/events');
	es.addEventListener('fleet', onEvent);
	es.addEventListener('report', onEvent);
	es.addEventListener('ended', function () { es.close(); location.reload(); });
	es.onopen = function () { document.documentElement.setAttribute('data-stream', 'on'); };
	es.onerror = function () { document.documentElement.setAttribute('data-stream', 'off'); };
})();
