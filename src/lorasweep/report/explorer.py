"""The runs explorer of ``report.html``: every run of ``runs.csv`` in one table that sorts and
filters in the browser.

The table is written here as plain HTML, so it reads without JavaScript; a small embedded
script (no library, no network) only reorders and hides its rows. Clicking a column header sorts
by it (again: the other way); the filter box takes space-separated terms, each either free text
found anywhere in the row or ``column<op>value`` with ``=``, ``!=``, ``<``, ``<=``, ``>``,
``>=`` (for example ``method=lora rank>=8 final_val_loss<0.02``); a term naming an unknown
column is ignored, and the page says so and lists the columns. The view is kept in the URL
fragment, ``#sort=<column>:<asc|desc>&filter=<terms>``, so it can be shared, and a page opened
with such a fragment applies it on load and scrolls to the table.

For checking it in a browser: once the script has set the table up, the table carries
``data-ready="true"``, and any script error on the page (or ``console.error``) is written into
``#explorer-errors``, which an earlier, separate script installs so that it also reports a
script that fails to parse.

Everything is derived from the runs table alone (no wall-clock times), so the section's bytes
depend only on the results.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from lorasweep.tables.runs import RUN_COLUMNS

NUMERIC_KINDS = "iuf"
FIRST_COLUMNS = [
    "run_id", "dataset", "method", "rank", "alpha", "scaling", "init", "lr", "lr_ratio", "bias",
    "seed", "status", "final_val_loss", "best_val_loss", "final_train_loss", "optimal_val_loss",
    "gap_to_optimal", "trainable_params", "total_params",
]  # fmt: skip
"""Settings, then losses and sizes, first; the rest of ``runs.csv``'s columns follow in order."""

STYLE = """
#runs-explorer .explorer-box{overflow:auto;max-height:75vh;border:1px solid #ccc;
width:96vw;max-width:110rem;position:relative;left:50%;transform:translateX(-50%)}
#runs-explorer table{margin:0;font-size:.75rem;white-space:nowrap}
#runs-explorer thead th{position:sticky;top:0;cursor:pointer;user-select:none}
#runs-explorer th[aria-sort=ascending]::after{content:" \\25B2"}
#runs-explorer th[aria-sort=descending]::after{content:" \\25BC"}
#runs-explorer input{width:100%;box-sizing:border-box;padding:.3rem;margin:.3rem 0}
#explorer-errors,#runs-explorer-unknown{color:#b2182b;white-space:pre-wrap}
"""

ERROR_TRAP = """
(function () {
  var box = function () { return document.getElementById("explorer-errors"); };
  var report = function (text) {
    var target = box();
    if (target) { target.hidden = false; target.textContent += text + "\\n"; }
  };
  window.addEventListener("error", function (event) {
    report("error: " + event.message + " (line " + event.lineno + ")");
  });
  var original = console.error;
  console.error = function () {
    report("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
"""

SCRIPT = """
(function () {
  "use strict";
  var section = document.getElementById("runs-explorer");
  var table = document.getElementById("runs-explorer-table");
  var input = document.getElementById("runs-explorer-filter");
  var count = document.getElementById("runs-explorer-count");
  var warning = document.getElementById("runs-explorer-unknown");
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var columns = heads.map(function (th) { return th.getAttribute("data-column"); });
  var numeric = heads.map(function (th) { return th.getAttribute("data-type") === "num"; });
  var rows = Array.prototype.slice.call(body.rows).map(function (tr, index) {
    var values = Array.prototype.map.call(tr.cells, function (td) {
      return td.getAttribute("data-value");
    });
    return { tr: tr, index: index, values: values, text: tr.textContent.toLowerCase() };
  });
  var state = { column: null, descending: false, filter: "" };

  function number(text) { return parseFloat(text); }  // not a number for an empty cell

  function predicate(term, unknown) {
    var match = /^([a-z_][a-z0-9_]*)(<=|>=|!=|=|<|>)(.*)$/i.exec(term);
    var index = match ? columns.indexOf(match[1]) : -1;
    if (match && index < 0) {
      unknown.push(match[1]);
      return function () { return true; };
    }
    if (index < 0) {
      var needle = term.toLowerCase();
      return function (row) { return row.text.indexOf(needle) >= 0; };
    }
    var op = match[2], wanted = match[3].toLowerCase();
    var wantedNumber = number(match[3]);
    return function (row) {
      var raw = row.values[index];
      var value = number(raw);
      var both = numeric[index] && !isNaN(value) && !isNaN(wantedNumber);
      if (op === "=") { return both ? value === wantedNumber : raw.toLowerCase() === wanted; }
      if (op === "!=") { return both ? value !== wantedNumber : raw.toLowerCase() !== wanted; }
      if (!both) { return false; }
      if (op === "<") { return value < wantedNumber; }
      if (op === "<=") { return value <= wantedNumber; }
      if (op === ">") { return value > wantedNumber; }
      return value >= wantedNumber;
    };
  }

  function compare(a, b) {
    var index = columns.indexOf(state.column);
    var x = a.values[index], y = b.values[index], order = 0;
    if (x === "" || y === "") {
      order = (x === "") - (y === "");  // empty cells last, whatever the direction
      return order !== 0 ? order : a.index - b.index;
    }
    if (numeric[index]) { order = number(x) - number(y); }
    else { order = x < y ? -1 : (x > y ? 1 : 0); }
    if (state.descending) { order = -order; }
    return order !== 0 ? order : a.index - b.index;
  }

  function sortText() { return state.column + ":" + (state.descending ? "desc" : "asc"); }

  function writeHash() {
    var parts = [];
    if (state.column) { parts.push("sort=" + sortText()); }
    if (state.filter) { parts.push("filter=" + encodeURIComponent(state.filter)); }
    var target = parts.length ? "#" + parts.join("&") : location.pathname;
    try { history.replaceState(null, "", target); }
    catch (ignored) { /* some file:// contexts refuse replaceState; the view still applies */ }
  }

  function apply(updateHash) {
    var terms = state.filter.split(/\\s+/).filter(function (t) { return t.length > 0; });
    var unknown = [];
    var tests = terms.map(function (term) { return predicate(term, unknown); });
    warning.hidden = unknown.length === 0;
    warning.textContent = unknown.length === 0 ? "" : "unknown column " +
      unknown.join(", ") + " in the filter (those terms are ignored); the columns are " +
      columns.join(", ");
    var shown = 0;
    rows.forEach(function (row) {
      var keep = tests.every(function (test) { return test(row); });
      row.tr.hidden = !keep;
      shown += keep ? 1 : 0;
    });
    var ordered = rows.slice();
    if (state.column && columns.indexOf(state.column) >= 0) { ordered.sort(compare); }
    ordered.forEach(function (row) { body.appendChild(row.tr); });
    heads.forEach(function (th, i) {
      if (columns[i] === state.column) {
        th.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
    count.textContent = shown + " of " + rows.length + " runs shown";
    table.setAttribute("data-sorted-by", state.column ? sortText() : "");
    if (updateHash) { writeHash(); }
  }

  function readHash() {
    var found = false;
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      if (eq < 0) { return; }
      var key = part.slice(0, eq), value = decodeURIComponent(part.slice(eq + 1));
      if (key === "sort") {
        var pieces = value.split(":");
        state.column = pieces[0];
        state.descending = pieces[1] === "desc";
        found = true;
      } else if (key === "filter") {
        state.filter = value;
        found = true;
      }
    });
    input.value = state.filter;
    return found;
  }

  heads.forEach(function (th, i) {
    th.addEventListener("click", function () {
      state.descending = state.column === columns[i] ? !state.descending : false;
      state.column = columns[i];
      apply(true);
    });
  });
  input.addEventListener("input", function () { state.filter = input.value; apply(true); });
  window.addEventListener("hashchange", function () { readHash(); apply(false); });
  var fromHash = readHash();
  apply(false);
  if (fromHash) { section.scrollIntoView(); }
  table.setAttribute("data-ready", "true");
})();
"""


def _cell(value, numeric: bool) -> str:
    """A ``<td>`` whose ``data-value`` is the exact value (sorting, filtering) and whose text
    is a short rendering of it."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return '<td data-value=""></td>'
    if not numeric:
        exact = shown = str(value)
    elif float(value).is_integer():
        exact = shown = str(int(value))
    else:
        exact, shown = repr(float(value)), f"{float(value):.6g}"
    return f'<td data-value="{html.escape(exact)}">{html.escape(shown)}</td>'


def section(runs: pd.DataFrame) -> str:
    """The explorer as one HTML fragment (heading, filter box, table, styles and scripts)."""
    order = FIRST_COLUMNS + [c for c in RUN_COLUMNS if c not in FIRST_COLUMNS]
    columns = [c for c in order if c in runs.columns]
    kinds = {c: runs[c].dtype.kind in NUMERIC_KINDS for c in columns}
    head = "".join(
        f'<th data-column="{html.escape(c)}" data-type="{"num" if kinds[c] else "text"}" '
        f'title="sort by {html.escape(c)}">{html.escape(c)}</th>'
        for c in columns
    )
    ordered = runs.sort_values("run_id", kind="stable")
    body = "\n".join(
        "<tr>" + "".join(_cell(row[c], kinds[c]) for c in columns) + "</tr>"
        for row in ordered[columns].to_dict("records")
    )
    return "\n".join(
        [
            f"<style>{STYLE}</style>",
            f"<script>{ERROR_TRAP}</script>",
            '<section id="runs-explorer">',
            "<h2>Runs explorer</h2>",
            "<p>Every run of <code>runs.csv</code>. Click a column to sort by it (again to "
            "reverse). Filter with free text or terms such as <code>method=lora</code>, "
            "<code>rank&gt;=8</code>, <code>final_val_loss&lt;0.02</code> (space-separated, "
            "all must hold). The view is kept in the address, so a link reopens it.</p>",
            '<input id="runs-explorer-filter" type="search" placeholder="filter, e.g. '
            'method=lora rank&gt;=8" aria-label="filter runs">',
            f'<p id="runs-explorer-count">{len(runs)} of {len(runs)} runs shown</p>',
            '<p id="runs-explorer-unknown" role="alert" hidden></p>',
            '<pre id="explorer-errors" hidden></pre>',
            '<div class="explorer-box">',
            f'<table id="runs-explorer-table"><thead><tr>{head}</tr></thead>',
            f"<tbody>\n{body}\n</tbody></table>",
            "</div>",
            f"<script>{SCRIPT}</script>",
            "</section>",
        ]
    )
