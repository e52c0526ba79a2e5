//! The loss curve as a small self-contained SVG (training loss per step,
//! evaluation loss as dots), written beside the adapter.

/// An SVG plot of `train` `(step, loss)` and `eval` `(step, loss)`.
pub fn loss_svg(train: &[(usize, f64)], eval: &[(usize, f64)]) -> String {
    let (w, h, m) = (640.0, 360.0, 48.0);
    let all = train.iter().chain(eval).map(|p| p.1).filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0), lo.max(0.0) + 1.0) };
    let last = train.iter().chain(eval).map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let x = |s: usize| m + (s as f64 / last) * (w - 2.0 * m);
    let y = |v: f64| h - m - (v - lo) / (hi - lo) * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{m}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{cx}\" y=\"{t}\" text-anchor=\"middle\">step</text><text x=\"12\" y=\"{cy}\" transform=\"rotate(-90 12 {cy})\" text-anchor=\"middle\">loss</text>\n\
         <text x=\"{m}\" y=\"{t}\">0</text><text x=\"{r}\" y=\"{t}\" text-anchor=\"end\">{last}</text>\n\
         <text x=\"{lx}\" y=\"{m}\" text-anchor=\"end\">{hi:.3}</text><text x=\"{lx}\" y=\"{b}\" text-anchor=\"end\">{lo:.3}</text>\n",
        b = h - m,
        r = w - m,
        cx = w / 2.0,
        cy = h / 2.0,
        t = h - m + 18.0,
        lx = m - 4.0,
    );
    let pts: Vec<String> = train.iter().filter(|p| p.1.is_finite()).map(|&(st, v)| format!("{:.1},{:.1}", x(st), y(v))).collect();
    s += &format!("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>\n", pts.join(" "));
    for &(st, v) in eval.iter().filter(|p| p.1.is_finite()) {
        s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#d62728\"/>\n", x(st), y(v));
    }
    s += &format!(
        "<text x=\"{r}\" y=\"{m}\" text-anchor=\"end\" fill=\"#1f77b4\">train loss</text>{}\n</svg>\n",
        if eval.is_empty() { String::new() } else { format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#d62728\">eval loss</text>", w - m, m + 16.0) },
        r = w - m
    );
    s
}
