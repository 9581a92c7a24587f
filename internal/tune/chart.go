package tune

import (
	"fmt"
	"strings"
	"time"
)

// Chart draws, for each measured level, the p90 latencies against the
// objective as bars (one column of five characters per level, in order of
// concurrency, up to 99999), the knee marked: what the table says, at a
// glance.
func Chart(res *Result, slo SLO) string {
	if len(res.Levels) == 0 {
		return ""
	}
	type row struct {
		name  string
		limit time.Duration
		get   func(Level) float64
	}
	var rows []row
	if slo.TTFT > 0 {
		rows = append(rows, row{"ttft p90", slo.TTFT, func(l Level) float64 { return l.TTFTP90.Float() }})
	}
	if slo.TPOT > 0 {
		rows = append(rows, row{"tpot p90", slo.TPOT, func(l Level) float64 { return l.TPOTP90.Float() }})
	}
	if slo.Latency > 0 {
		rows = append(rows, row{"latency p90", slo.Latency, func(l Level) float64 { return l.LatencyP90.Float() }})
	}
	const bars = "▁▂▃▄▅▆▇█"
	var b strings.Builder
	for _, r := range rows {
		// The objective is the 6th of 8 heights: above it is a miss.
		fmt.Fprintf(&b, "%-12s", r.name)
		for _, l := range res.Levels {
			h := int(r.get(l) / r.limit.Seconds() * 6)
			h = max(0, min(h, 7))
			b.WriteString(string([]rune(bars)[h]) + "    ")
		}
		fmt.Fprintf(&b, " objective %s at ▆\n", r.limit)
	}
	fmt.Fprintf(&b, "%-12s", "in flight")
	for _, l := range res.Levels {
		fmt.Fprintf(&b, "%-5d", l.Concurrency)
	}
	b.WriteString("\n")
	if res.Knee != nil {
		fmt.Fprintf(&b, "%-12s", "")
		for _, l := range res.Levels {
			mark := "     "
			if l.Concurrency == res.Knee.Concurrency {
				mark = "^    "
			}
			b.WriteString(mark)
		}
		b.WriteString(" knee\n")
	}
	return b.String()
}
