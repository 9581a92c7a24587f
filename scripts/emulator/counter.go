package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

// serveCounter puts a counting proxy in front of kube-apiserver (the test
// harness's fault proxy set to break nothing), writes a kubeconfig through
// it, and serves the counts on loopback, so that benchmarks can count the
// API requests a tool makes at the server's door.
func (e *Emulator) serveCounter() error {
	fp, err := e.CP.StartFaultProxy(0)
	if err != nil {
		return err
	}
	e.stops = append(e.stops, fp.Close)
	b, err := os.ReadFile(fp.Kubeconfig)
	if err == nil {
		err = os.WriteFile(filepath.Join(e.Dir, "kubeconfig-counted"), b, 0o600)
	}
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{"requests": fp.Requests.Swap(0), "mutating": fp.Mutating.Swap(0)})
	})}
	go srv.Serve(l)
	e.stops = append(e.stops, func() { srv.Close() })
	return os.WriteFile(filepath.Join(e.Dir, "counter"), []byte(l.Addr().String()), 0o600)
}
