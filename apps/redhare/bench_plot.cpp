// The SVG plot of `redhare bench sweep`, written by hand (no plotting library in Debian's C++
// packages that the project links): the throughput/latency trade-off of each concurrency level.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

#include "apps/redhare/bench.h"

namespace redhare::app::bench {
namespace {

// A tick step of 1, 2 or 5 times a power of ten giving about `ticks` intervals up to max.
double nice_step(double max, int ticks) {
  if (!(max > 0)) return 1;
  const double raw = max / ticks;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

// printf into the end of s (SVG is mostly numbers in attributes; also avoids GCC 12's false
// -Wrestrict on long std::string + chains).
[[gnu::format(printf, 2, 3)]] void addf(std::string& s, const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  const int n = std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  if (n > 0) s.append(buf, std::min(static_cast<size_t>(n), sizeof(buf) - 1));
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

double max_of(const std::vector<double>& v) {
  return std::max(*std::max_element(v.begin(), v.end()), 1e-9);
}

// One panel at (ox, oy) of size w x h: x against y, points joined in concurrency order.
std::string panel(double ox, double oy, double w, double h, const std::vector<double>& xs,
                  const std::vector<double>& ys, const std::vector<int64_t>& labels,
                  const std::string& xlabel, const std::string& ylabel) {
  const double left = 70, right = 20, top = 20, bottom = 50;
  const double pw = w - left - right, ph = h - top - bottom;
  const double xstep = nice_step(max_of(xs) * 1.05, 5), ystep = nice_step(max_of(ys) * 1.05, 5);
  const double xmax = xstep * std::max(1.0, std::ceil(max_of(xs) * 1.05 / xstep));
  const double ymax = ystep * std::max(1.0, std::ceil(max_of(ys) * 1.05 / ystep));
  auto X = [&](double v) { return ox + left + pw * v / xmax; };
  auto Y = [&](double v) { return oy + top + ph * (1 - v / ymax); };
  std::string s = "<g class=\"panel\">\n";
  addf(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", X(0), Y(0),
       X(xmax), Y(0));
  addf(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", X(0), Y(0),
       X(0), Y(ymax));
  for (int k = 0; k * xstep <= xmax * (1 + 1e-9); ++k) {
    const double v = k * xstep;
    addf(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", X(v), Y(0),
         X(v), Y(ymax));
    addf(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", X(v), Y(0) + 16, v);
  }
  for (int k = 0; k * ystep <= ymax * (1 + 1e-9); ++k) {
    const double v = k * ystep;
    addf(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", X(0), Y(v),
         X(xmax), Y(v));
    addf(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", X(0) - 6, Y(v) + 4, v);
  }
  addf(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", ox + left + pw / 2,
       oy + h - 12, escape(xlabel).c_str());
  addf(s, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
       ox + 16, oy + top + ph / 2, escape(ylabel).c_str());
  s += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"";
  for (size_t i = 0; i < xs.size(); ++i) addf(s, "%s%.1f,%.1f", i ? " " : "", X(xs[i]), Y(ys[i]));
  s += "\"/>\n";
  for (size_t i = 0; i < xs.size(); ++i) {
    addf(s, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#1f77b4\"/>\n", X(xs[i]), Y(ys[i]));
    addf(s, "<text x=\"%.1f\" y=\"%.1f\">c=%lld</text>\n", X(xs[i]) + 6, Y(ys[i]) - 6,
         static_cast<long long>(labels[i]));
  }
  s += "</g>\n";
  return s;
}

}  // namespace

std::string sweep_svg(const std::vector<SweepPoint>& points, const std::string& title) {
  const double w = 480, h = 360, head = 30;
  std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  addf(s,
       "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
       "font-family=\"sans-serif\" font-size=\"12\">\n",
       2 * w, h + head);
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  addf(s, "<text x=\"%.0f\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n", w,
       escape(title).c_str());
  if (!points.empty()) {
    std::vector<double> tput, tpot, ttft;
    std::vector<int64_t> labels;
    for (const SweepPoint& p : points) {
      tput.push_back(p.output_throughput);
      tpot.push_back(p.mean_tpot_ms);
      ttft.push_back(p.mean_ttft_ms);
      labels.push_back(p.concurrency);
    }
    s += panel(0, head, w, h, tpot, tput, labels, "mean TPOT (ms)", "output throughput (tok/s)");
    s += panel(w, head, w, h, ttft, tput, labels, "mean TTFT (ms)", "output throughput (tok/s)");
  }
  s += "</svg>\n";
  return s;
}

}  // namespace redhare::app::bench
