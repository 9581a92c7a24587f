// Package units holds how durations and rates appear in vllm-hpa's JSON:
// durations as seconds, to the millisecond, in fields whose names end in
// Seconds; never bare nanosecond integers or float noise such as
// 5.6129999999999995.
package units

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Seconds is a duration that marshals as a number of seconds with at most
// three decimals.
type Seconds time.Duration

// maxSeconds is the longest time.Duration in seconds.
const maxSeconds = float64(math.MaxInt64) / float64(time.Second)

// MarshalJSON writes s as seconds, rounded to the millisecond.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, s.Float(), 'f', -1, 64), nil
}

// UnmarshalJSON reads seconds; beyond what a time.Duration holds (about
// 292 years either way) is an error, not a wrapped-around duration.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("seconds: %w", err)
	}
	if math.Abs(f) > maxSeconds {
		return fmt.Errorf("seconds: %s is out of range (at most %g)", b, maxSeconds)
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// String is the duration to a tenth of a second, e.g. 14.9s.
func (s Seconds) String() string { return time.Duration(s).Round(100 * time.Millisecond).String() }

// Float is s in seconds, rounded to the millisecond.
func (s Seconds) Float() float64 {
	ms := time.Duration(s).Round(time.Millisecond).Milliseconds()
	return float64(ms) / 1000
}
