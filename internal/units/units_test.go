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
