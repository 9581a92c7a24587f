package localcluster

import (
	"fmt"
	"net"
	"testing"
)

// TestFreePortsBelowEphemeralRange: the control plane's ports come from
// below the range the kernel takes outgoing connections' source ports
// from, so that no connection takes one before its server binds it.
func TestFreePortsBelowEphemeralRange(t *testing.T) {
	if ephemeralStart()-10000 < 1000 {
		t.Skipf("the ephemeral range starts at %d: no room below it, FreePorts takes the kernel's choice", ephemeralStart())
	}
	ports, err := FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("FreePorts(3) = %v, want 3 distinct ports", ports)
	}
	for _, p := range ports {
		if p < 10000 || p >= ephemeralStart() {
			t.Errorf("port %d outside [10000, %d)", p, ephemeralStart())
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d not free: %v", p, err)
			continue
		}
		l.Close()
	}
}
