package units

import (
	"encoding/json"
	"testing"
	"time"
)

func TestSecondsJSON(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{5613 * time.Millisecond, "5.613"}, // Duration.Seconds gives 5.6129999999999995
		{5613400 * time.Microsecond, "5.613"},
		{0, "0"},
		{90 * time.Second, "90"},
		{1500 * time.Microsecond, "0.002"},
	} {
		b, err := json.Marshal(Seconds(c.d))
		if err != nil || string(b) != c.want {
			t.Errorf("%s: %s %v, want %s", c.d, b, err, c.want)
		}
		var back Seconds
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != c.d.Round(time.Millisecond) {
			t.Errorf("%s: round trip %s %v", c.d, time.Duration(back), err)
		}
	}
}

// Seconds beyond a time.Duration's range are refused, not wrapped around
// into a negative (or any) duration.
func TestSecondsOutOfRange(t *testing.T) {
	for _, in := range []string{"1e300", "-1e300", "9.3e9"} {
		var s Seconds
		if err := s.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("%s read as %v", in, time.Duration(s))
		}
	}
	var s Seconds
	if err := s.UnmarshalJSON([]byte("9.2e9")); err != nil || time.Duration(s) <= 0 {
		t.Errorf("9.2e9 s: %v, %v", time.Duration(s), err)
	}
}
