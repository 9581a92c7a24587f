// Package behavior derives the HPA's scaling behaviour from a measured
// scale-up (verify --load's stages): a scale-up the HPA asks for is
// already late by the cold start, so nothing should slow it further, and a
// pod that took the cold start to come must not be thrown away by a dip
// shorter than that.
package behavior

import (
	"errors"
	"fmt"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/stages"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

// Recommendation is the behaviour for the measured cold start, and why.
type Recommendation struct {
	// ColdStart is from the HPA's decision to the slowest new pod's
	// first answer.
	ColdStart              units.Seconds `json:"coldStartSeconds"`
	ScaleUpStabilization   units.Seconds `json:"scaleUpStabilizationSeconds"`
	ScaleUpPercent         int32         `json:"scaleUpPercent"`
	ScaleUpPods            int32         `json:"scaleUpPods"`
	ScaleDownStabilization units.Seconds `json:"scaleDownStabilizationSeconds"`
	Reasoning              []string      `json:"reasoning"`
	// Changes are the settings that differ from the configuration's, as
	// key: value (empty: the configuration already is this).
	Changes map[string]string `json:"changes"`
}

// ErrNoScaleUp is a report without the stages of a scale-up whose new
// pods all answered: a cold start cut short would undersize the window.
var ErrNoScaleUp = errors.New("the report has no measured scale-up whose new pods all answered (its stages, ending in the slowest pod's first answer): run verify --load --expect-replicas N --report FILE")

// windowStep is what the scale-down window is rounded up to: the HPA's
// sync period on GKE.
const windowStep = 15 * time.Second

// Recommend derives the behaviour from report's first scale-up, starting
// from the configuration's h.
func Recommend(report *stages.Report, h config.HPA) (*Recommendation, error) {
	cold, ok := ColdStart(report)
	if !ok {
		return nil, ErrNoScaleUp
	}
	r := &Recommendation{ColdStart: units.Seconds(cold), ScaleUpPods: h.ScaleUpPods, ScaleUpPercent: max(h.ScaleUpPercent, 100)}
	down := h.ScaleDownStabilization
	r.Reasoning = append(r.Reasoning, fmt.Sprintf("cold start: %s from the HPA's decision to the slowest new pod's first answer", cold.Round(time.Second)))
	r.Reasoning = append(r.Reasoning, fmt.Sprintf("scale-up: no stabilization and up to %d%% more pods (and at least %d) every %s: a scale-up is already %s late when the HPA asks for it, so nothing should hold it back further",
		r.ScaleUpPercent, r.ScaleUpPods, h.ScaleUpPeriod, cold.Round(time.Second)))
	// The HPA's window is at most an hour.
	if window := min(roundUp(cold, windowStep), time.Hour); window > down {
		r.Reasoning = append(r.Reasoning, fmt.Sprintf("scale-down: a stabilization window of %s (was %s): a dip shorter than the cold start does not throw away a pod that took %s to serve",
			window, down, cold.Round(time.Second)))
		down = window
	} else {
		r.Reasoning = append(r.Reasoning, fmt.Sprintf("scale-down: the stabilization window of %s already covers the cold start", down))
	}
	r.ScaleDownStabilization = units.Seconds(down)
	r.Changes = map[string]string{}
	if h.ScaleUpStabilization != 0 {
		r.Changes["hpa.scale-up-stabilization"] = "0s"
	}
	if h.ScaleUpPercent != r.ScaleUpPercent {
		r.Changes["hpa.scale-up-percent"] = fmt.Sprint(r.ScaleUpPercent)
	}
	if h.ScaleDownStabilization != down {
		r.Changes["hpa.scale-down-stabilization"] = down.String()
	}
	return r, nil
}

// Apply sets the recommendation on h.
func (r *Recommendation) Apply(h *config.HPA) {
	h.ScaleUpStabilization, h.ScaleUpPercent, h.ScaleUpPods = time.Duration(r.ScaleUpStabilization), r.ScaleUpPercent, r.ScaleUpPods
	h.ScaleDownStabilization = time.Duration(r.ScaleDownStabilization)
}

// ColdStart is from the HPA's decision to the slowest new pod's first
// answer; false when the report has no decision, or the slowest pod did
// not answer (its cold start is unknown, only bounded below).
func ColdStart(report *stages.Report) (time.Duration, bool) {
	if report == nil || report.Decision == nil || len(report.Stages) == 0 || report.Stages[len(report.Stages)-1].Name != "first answer" {
		return 0, false
	}
	end := report.Stages[len(report.Stages)-1].At
	if end <= *report.Decision {
		return 0, false
	}
	return time.Duration(end - *report.Decision), true
}

func roundUp(d, step time.Duration) time.Duration {
	return (d + step - 1) / step * step
}
