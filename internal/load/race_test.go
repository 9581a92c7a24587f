//go:build race

package load_test

// raceDetector: this test binary runs under the race detector, which
// slows every goroutine several times over.
const raceDetector = true
