// Small SVG charts for the ToV Select dashboard. No dependencies; everything is drawn here.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, children) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(key, String(value));
    }
    for (const child of children || []) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function title(text) { return svg("title", {}, [text]); }

  function fmt(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 0.01 || abs >= 10000)) return value.toExponential(1);
    return Number(value.toPrecision(3)).toString();
  }

  // About `count` round tick values covering [lo, hi].
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  function frame(name, width, height) {
    return svg("svg", {
      class: "chart", "data-chart": name, viewBox: `0 0 ${width} ${height}`,
      width, height, role: "img",
    });
  }

  function legend(items, x, y) {
    const group = svg("g", { class: "legend" });
    let offset = 0;
    for (const [cls, label] of items) {
      group.appendChild(svg("rect", { x: x + offset, y: y - 9, width: 10, height: 10, class: cls }));
      group.appendChild(svg("text", { x: x + offset + 14, y }, [label]));
      offset += 24 + label.length * 6.2;
    }
    return group;
  }

  function yAxis(root, scaleY, maxValue, left, right, label) {
    for (const t of ticks(0, maxValue, 4)) {
      const y = scaleY(t);
      root.appendChild(svg("line", { x1: left, x2: right, y1: y, y2: y, class: "gridline" }));
      root.appendChild(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, [fmt(t)]));
    }
    if (label) {
      root.appendChild(svg("text", {
        x: 12, y: scaleY(maxValue / 2), transform: `rotate(-90 12 ${scaleY(maxValue / 2)})`,
        "text-anchor": "middle",
      }, [label]));
    }
  }

  // Histogram of the pool's scores, with the selected rows (by score / random) drawn over it.
  function histogram(container, data) {
    container.replaceChildren();
    const hist = data && data.histogram;
    if (!hist) {
      container.appendChild(document.createTextNode("No scores (this method stores none)."));
      return null;
    }
    const W = 560, H = 260, L = 56, R = 12, T = 24, B = 40;
    const root = frame("histogram", W, H);
    const n = hist.pool.length;
    const peak = Math.max(1, ...hist.pool);
    const lo = hist.edges[0], hi = hist.edges[n];
    const x = (v) => L + ((v - lo) / (hi - lo)) * (W - L - R);
    const y = (v) => H - B - (v / peak) * (H - T - B);
    yAxis(root, y, peak, L, W - R, "rows");
    const barW = (W - L - R) / n;
    for (let i = 0; i < n; i++) {
      const x0 = L + i * barW;
      const range = `[${fmt(hist.edges[i])}, ${fmt(hist.edges[i + 1])})`;
      const pool = hist.pool[i], picked = hist.selected_score[i], rnd = hist.selected_random[i];
      root.appendChild(svg("rect", {
        class: "bar pool", x: x0 + 0.5, width: Math.max(0, barW - 1), y: y(pool),
        height: y(0) - y(pool), "data-count": pool,
      }, [title(`score ${range}: ${pool} rows in the pool`)]));
      if (picked > 0) {
        root.appendChild(svg("rect", {
          class: "bar selected", x: x0 + 0.5, width: Math.max(0, barW - 1), y: y(picked),
          height: y(0) - y(picked), "data-count": picked,
        }, [title(`score ${range}: ${picked} selected by score`)]));
      }
      if (rnd > 0) {
        root.appendChild(svg("rect", {
          class: "bar random", x: x0 + barW * 0.25, width: Math.max(0, barW * 0.5),
          y: y(picked + rnd), height: y(picked) - y(picked + rnd), "data-count": rnd,
        }, [title(`score ${range}: ${rnd} selected at random`)]));
      }
    }
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));
    for (const t of ticks(lo, hi, 6)) {
      root.appendChild(svg("text", { x: x(t), y: H - B + 15, "text-anchor": "middle" }, [fmt(t)]));
    }
    root.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" },
      ["score (loss improvement)"]));
    root.appendChild(legend([["pool", "pool"], ["selected", "selected by score"],
      ["random", "selected at random"]], L, 14));
    container.appendChild(root);
    return root;
  }

  function binLabel(bin) {
    return bin.min_length === bin.max_length ? `${bin.min_length}` :
      `${bin.min_length}–${bin.max_length}`;
  }

  // Box plot of the scores in each equal-count length bin.
  function lengthBoxes(container, data) {
    container.replaceChildren();
    const bins = (data && data.length_bins || []).filter((b) => b.median !== null);
    if (!bins.length) {
      container.appendChild(document.createTextNode("No scores by length."));
      return null;
    }
    const W = 560, H = 260, L = 56, R = 12, T = 16, B = 48;
    const root = frame("length-bins", W, H);
    const lo = Math.min(...bins.map((b) => b.p5)), hi = Math.max(...bins.map((b) => b.p95));
    const pad = (hi - lo) * 0.05 || 0.5;
    const vmin = lo - pad, vmax = hi + pad;
    const y = (v) => H - B - ((v - vmin) / (vmax - vmin)) * (H - T - B);
    for (const t of ticks(vmin, vmax, 5)) {
      root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "gridline" }));
      root.appendChild(svg("text", { x: L - 6, y: y(t) + 4, "text-anchor": "end" }, [fmt(t)]));
    }
    if (vmin < 0 && vmax > 0) {
      root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));
    }
    const slot = (W - L - R) / bins.length;
    bins.forEach((bin, i) => {
      const cx = L + slot * (i + 0.5), half = Math.min(18, slot * 0.3);
      const tip = `length ${binLabel(bin)} (${bin.count} rows): median ${fmt(bin.median)}, ` +
        `quartiles ${fmt(bin.q1)}–${fmt(bin.q3)}, 5–95% ${fmt(bin.p5)}–${fmt(bin.p95)}`;
      const group = svg("g", { class: "bin", "data-count": bin.count }, [title(tip)]);
      group.appendChild(svg("line", { class: "whisker", x1: cx, x2: cx, y1: y(bin.p5), y2: y(bin.p95) }));
      group.appendChild(svg("rect", {
        class: "box", x: cx - half, width: 2 * half, y: y(bin.q3),
        height: Math.max(1, y(bin.q1) - y(bin.q3)),
      }));
      group.appendChild(svg("line", {
        class: "median", x1: cx - half, x2: cx + half, y1: y(bin.median), y2: y(bin.median),
      }));
      root.appendChild(group);
      root.appendChild(svg("text", { x: cx, y: H - B + 15, "text-anchor": "middle" },
        [binLabel(bin)]));
    });
    root.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" },
      ["length bin (loss-bearing tokens)"]));
    root.appendChild(svg("text", {
      x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`,
      "text-anchor": "middle",
    }, ["score"]));
    container.appendChild(root);
    return root;
  }

  // Stacked bars: selected rows per length bin, by score and at random.
  function lengthSelected(container, data) {
    container.replaceChildren();
    const bins = data && data.length_bins || [];
    if (!bins.length) {
      container.appendChild(document.createTextNode("No length bins."));
      return null;
    }
    const W = 560, H = 220, L = 56, R = 12, T = 24, B = 48;
    const root = frame("length-selected", W, H);
    const peak = Math.max(1, ...bins.map((b) => b.selected_score + b.selected_random));
    const y = (v) => H - B - (v / peak) * (H - T - B);
    yAxis(root, y, peak, L, W - R, "selected");
    const slot = (W - L - R) / bins.length;
    bins.forEach((bin, i) => {
      const x0 = L + slot * i + slot * 0.15, w = slot * 0.7;
      const s = bin.selected_score, r = bin.selected_random;
      const tip = `length ${binLabel(bin)}: ${s} by score, ${r} at random, of ${bin.count}`;
      root.appendChild(svg("rect", {
        class: "bar selected", x: x0, width: w, y: y(s), height: y(0) - y(s), "data-count": s,
      }, [title(tip)]));
      root.appendChild(svg("rect", {
        class: "bar random", x: x0, width: w, y: y(s + r), height: y(s) - y(s + r),
        "data-count": r,
      }, [title(tip)]));
      root.appendChild(svg("text", { x: x0 + w / 2, y: H - B + 15, "text-anchor": "middle" },
        [binLabel(bin)]));
    });
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));
    root.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" },
      ["length bin"]));
    root.appendChild(legend([["selected", "by score"], ["random", "at random"]], L, 14));
    container.appendChild(root);
    return root;
  }

  // Horizontal paired bars: each category's share of the pool and of the selection.
  function composition(container, data) {
    container.replaceChildren();
    if (!data || !data.present) {
      const columns = data && data.columns ? ` Columns: ${data.columns.join(", ")}.` : "";
      container.appendChild(document.createTextNode(
        `The pool has no '${data ? data.column : "source"}' column.${columns}`));
      return null;
    }
    const names = Object.keys(data.pool);
    const poolTotal = Math.max(1, data.pool_rows), selTotal = Math.max(1, data.selected_rows);
    const rows = names.map((name) => ({
      name, pool: data.pool[name] / poolTotal, sel: (data.selection[name] || 0) / selTotal,
      poolN: data.pool[name], selN: data.selection[name] || 0,
    }));
    const labelW = Math.min(200, 24 + Math.max(...names.map((n) => n.length)) * 6.4);
    const W = 560, rowH = 26, T = 28, B = 28, L = labelW, R = 96;
    const H = T + B + rowH * rows.length;
    const root = frame("composition", W, H);
    const peak = Math.max(0.01, ...rows.map((r) => Math.max(r.pool, r.sel)));
    const x = (v) => L + (v / peak) * (W - L - R);
    for (const t of ticks(0, peak, 4)) {
      root.appendChild(svg("line", { x1: x(t), x2: x(t), y1: T - 4, y2: H - B, class: "gridline" }));
      root.appendChild(svg("text", { x: x(t), y: H - B + 14, "text-anchor": "middle" },
        [`${Math.round(t * 1000) / 10}%`]));
    }
    rows.forEach((row, i) => {
      const y0 = T + i * rowH;
      const tip = `${row.name}: ${row.poolN} of ${data.pool_rows} pool rows ` +
        `(${(100 * row.pool).toFixed(1)}%), ${row.selN} of ${data.selected_rows} selected ` +
        `(${(100 * row.sel).toFixed(1)}%)`;
      const group = svg("g", { class: "category", "data-name": row.name }, [title(tip)]);
      group.appendChild(svg("text", { x: L - 6, y: y0 + 15, "text-anchor": "end", class: "label" },
        [row.name.length > 30 ? row.name.slice(0, 29) + "…" : row.name]));
      group.appendChild(svg("rect", {
        class: "bar pool", x: L, y: y0 + 3, height: 9, width: Math.max(0, x(row.pool) - L),
        "data-count": row.poolN,
      }));
      group.appendChild(svg("rect", {
        class: "bar selected", x: L, y: y0 + 13, height: 9, width: Math.max(0, x(row.sel) - L),
        "data-count": row.selN,
      }));
      group.appendChild(svg("text", { x: Math.max(x(row.pool), x(row.sel)) + 4, y: y0 + 16 },
        [`${(100 * row.sel).toFixed(0)}% vs ${(100 * row.pool).toFixed(0)}%`]));
      root.appendChild(group);
    });
    root.appendChild(svg("line", { x1: L, x2: L, y1: T - 4, y2: H - B, class: "axis" }));
    root.appendChild(legend([["pool", "pool"], ["selected", "selection"]], L, 14));
    container.appendChild(root);
    return root;
  }

  window.TovCharts = { histogram, lengthBoxes, lengthSelected, composition, fmt };
})();
