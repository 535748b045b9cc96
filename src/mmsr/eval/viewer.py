"""A static HTML trajectory viewer: one self-contained page per evaluation run.

Each question shows its image, the question and gold answers, every model turn (reasoning
and action), each tool call with its results and thumbnails, the final answer and the
verdict. Filters (client side, no server): correct / wrong, searched / not, and free text.
The initial filter can be given in the URL fragment, e.g. `viewer.html#correct=wrong&
searched=yes`, so a report can link straight to "wrong answers that searched".

Images are embedded as `data:` URIs (see `mmsr.eval.images`); model text is inserted with
`textContent`, never as HTML, so a trajectory cannot inject markup into the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsr.eval.images import data_uri, image_src
from mmsr.eval.records import EvalRecord

MAX_RESULTS_SHOWN = 5  # results per tool call shown in the viewer


def _tool_calls(trajectory: Mapping[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for call in trajectory.get("tool_calls") or []:
        response = call.get("response") or {}
        results = []
        for result in (response.get("results") or [])[:MAX_RESULTS_SHOWN]:
            results.append(
                {
                    "title": str(result.get("title") or ""),
                    "url": str(result.get("url") or ""),
                    "text": str(result.get("summary") or result.get("snippet") or ""),
                    "thumb": image_src(str(result.get("thumbnail") or ""), 96),
                }
            )
        calls.append(
            {
                "kind": str(call.get("kind") or ""),
                "query": str(call.get("query") or ""),
                "turn": call.get("turn"),
                "error": str(response.get("error") or ""),
                "results": results,
            }
        )
    return calls


def viewer_rows(
    records: Sequence[EvalRecord], question_images: Mapping[str, bytes] | None = None
) -> list[dict[str, Any]]:
    """The JSON the page renders: one row per record, images already as data URIs."""
    question_images = question_images or {}
    rows = []
    for record in records:
        if record.sample_id in question_images:
            image = data_uri(question_images[record.sample_id], 256)
        else:
            image = image_src(record.image or "", 256)
        trajectory = record.trajectory or {}
        rows.append(
            {
                "id": record.sample_id,
                "question": record.question,
                "golds": record.golds,
                "qtype": record.qtype,
                "category": record.category,
                "image": image,
                "turns": [
                    {
                        "text": str(t.get("text") or ""),
                        "action": str(t.get("action") or ""),
                        "error": str(t.get("error") or ""),
                    }
                    for t in trajectory.get("turns") or []
                ],
                "calls": _tool_calls(trajectory),
                "prediction": record.prediction,
                "correct": record.correct,
                "searched": record.searched,
                "judge": record.judge,
                "note": record.judge_note,
                "finish": record.finish_reason,
            }
        )
    return rows


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
#filters{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ccc}
#filters label{margin-right:1em}
.qrow{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.8em;
display:grid;grid-template-columns:270px 1fr;gap:1em}
.qrow[hidden]{display:none}
.qimg{max-width:256px;border:1px solid #ccc}
.badge{display:inline-block;padding:0 .5em;border-radius:4px;margin-right:.4em;font-size:.85em}
.ok{background:#cfc}.bad{background:#fcc}.search{background:#cdf}.nosearch{background:#eee}
.turn{border-left:3px solid #99c;padding-left:.6em;margin:.4em 0}
.turn pre{white-space:pre-wrap;margin:.2em 0;font-size:.85em}
.call{border-left:3px solid #c96;padding-left:.6em;margin:.4em 0;font-size:.9em}
.result{display:flex;gap:.5em;align-items:flex-start;margin:.3em 0}
.result img{max-width:96px;max-height:72px;border:1px solid #ccc}
.muted{color:#777;font-size:.85em}
.turn .bad,.call .bad{font-size:.85em}
"""

# Plain ES5-ish JavaScript: runs in any browser and in headless Chromium for the tests.
_SCRIPT = r"""
(function () {
  var rows = JSON.parse(document.getElementById('data').textContent);
  var list = document.getElementById('rows');
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  rows.forEach(function (r) {
    var row = el('div', 'qrow');
    row.id = 'q-' + r.id;
    row.setAttribute('data-correct', r.correct ? '1' : '0');
    row.setAttribute('data-searched', r.searched ? '1' : '0');
    var left = el('div');
    if (r.image) {
      var img = el('img', 'qimg');
      img.src = r.image;
      img.alt = r.id;
      left.appendChild(img);
    }
    left.appendChild(el('div', 'muted', r.id + ' · ' + r.qtype + ' · ' + r.category));
    row.appendChild(left);
    var right = el('div');
    var head = el('div');
    head.appendChild(el('span', 'badge verdict ' + (r.correct ? 'ok' : 'bad'),
                        r.correct ? 'correct' : 'wrong'));
    head.appendChild(el('span', 'badge ' + (r.searched ? 'search' : 'nosearch'),
                        r.searched ? 'searched' : 'no search'));
    head.appendChild(el('span', 'muted', 'judge: ' + r.judge + ' · finish: ' + r.finish));
    right.appendChild(head);
    right.appendChild(el('p', 'question', r.question));
    right.appendChild(el('p', 'muted', 'gold: ' + r.golds.join(' | ')));
    function callNode(c) {
      var call = el('div', 'call');
      call.appendChild(el('b', null, c.kind + (c.query ? ': ' + c.query : '')));
      if (c.error) call.appendChild(el('div', 'bad', 'error: ' + c.error));
      if (!c.results.length && !c.error) call.appendChild(el('div', 'muted', 'no results'));
      c.results.forEach(function (res) {
        var line = el('div', 'result');
        if (res.thumb) {
          var th = el('img', 'thumb');
          th.src = res.thumb;
          th.alt = res.title;
          line.appendChild(th);
        }
        var body = el('div');
        body.appendChild(el('div', null, res.title));
        if (res.url) body.appendChild(el('div', 'muted', res.url));
        if (res.text) body.appendChild(el('div', 'muted', res.text));
        line.appendChild(body);
        call.appendChild(line);
      });
      return call;
    }
    var placed = {};
    r.turns.forEach(function (t, i) {
      var turn = el('div', 'turn');
      turn.appendChild(el('b', null, 'turn ' + (i + 1) + ': ' + t.action));
      turn.appendChild(el('pre', null, t.text));
      if (t.error) turn.appendChild(el('div', 'bad', t.error));
      right.appendChild(turn);
      r.calls.forEach(function (c, j) {  // tool calls carry the 1-based turn that made them
        if (c.turn === i + 1) { right.appendChild(callNode(c)); placed[j] = true; }
      });
    });
    r.calls.forEach(function (c, j) { if (!placed[j]) right.appendChild(callNode(c)); });
    var answer = r.prediction === null ? '(none)' : r.prediction;
    right.appendChild(el('p', 'answer', 'answer: ' + answer));
    if (r.note) right.appendChild(el('p', 'muted', 'judge note: ' + r.note));
    row.appendChild(right);
    row._search = [r.question, r.id, r.qtype, r.prediction || ''].join(' ').toLowerCase();
    list.appendChild(row);
  });
  var fc = document.getElementById('f-correct'), fs = document.getElementById('f-searched');
  var ft = document.getElementById('f-text');
  function apply() {
    var shown = 0, text = ft.value.toLowerCase();
    Array.prototype.forEach.call(list.children, function (row) {
      var correct = row.getAttribute('data-correct') === '1';
      var searched = row.getAttribute('data-searched') === '1';
      var ok = (fc.value === 'all' || (fc.value === 'correct') === correct)
        && (fs.value === 'all' || (fs.value === 'yes') === searched)
        && (!text || row._search.indexOf(text) >= 0);
      row.hidden = !ok;
      if (ok) shown++;
    });
    document.getElementById('shown').textContent = shown + ' of ' + rows.length + ' shown';
  }
  location.hash.replace(/^#/, '').split('&').forEach(function (pair) {
    var kv = pair.split('=');
    if (kv[0] === 'correct' && ['all', 'correct', 'wrong'].indexOf(kv[1]) >= 0) fc.value = kv[1];
    if (kv[0] === 'searched' && ['all', 'yes', 'no'].indexOf(kv[1]) >= 0) fs.value = kv[1];
  });
  fc.onchange = fs.onchange = ft.oninput = apply;
  apply();
  document.body.setAttribute('data-rendered', String(rows.length));
})();
"""


def render_viewer(
    records: Sequence[EvalRecord],
    title: str = "mmsr trajectories",
    question_images: Mapping[str, bytes] | None = None,
) -> str:
    """The whole page as one HTML string."""
    # "</" inside a <script> block would end it early; JSON allows the escaped form.
    data = json.dumps(viewer_rows(records, question_images), ensure_ascii=False)
    data = data.replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body data-rendered="0">
<h1>{html.escape(title)}</h1>
<div id="filters">
<label>verdict <select id="f-correct"><option value="all">all</option>
<option value="correct">correct</option><option value="wrong">wrong</option></select></label>
<label>search <select id="f-searched"><option value="all">all</option>
<option value="yes">searched</option><option value="no">not searched</option></select></label>
<label>text <input id="f-text" type="search" placeholder="question, id, answer"></label>
<span id="shown"></span>
</div>
<div id="rows"></div>
<script id="data" type="application/json">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_viewer(
    records: Sequence[EvalRecord],
    path: Path,
    title: str = "mmsr trajectories",
    question_images: Mapping[str, bytes] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_viewer(records, title, question_images), encoding="utf-8")
    return path
