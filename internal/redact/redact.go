// Package redact keeps a secret out of everything vllm-hpa prints, logs or
// writes: one Scrubber replaces the secret, and the forms a server is likely
// to echo it in (base64 at any alignment, as inside a Secret's data or an
// encoded object; URL-encoded; JSON-escaped), with "<redacted>".
package redact

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Placeholder replaces every secret.
const Placeholder = "<redacted>"

// minFingerprint is the shortest encoded fragment that is replaced: shorter
// fragments of a base64 encoding could match unrelated text.
const minFingerprint = 8

// Scrubber replaces registered secrets in strings and in what passes
// through its writers. The zero value scrubs nothing; it is safe for
// concurrent use.
type Scrubber struct {
	mu       sync.RWMutex
	patterns []string // longest first
	replacer *strings.Replacer
}

// Add registers secret and its encoded forms; "" is ignored.
func (s *Scrubber) Add(secret string) {
	if secret == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range s.patterns {
		seen[p] = true
	}
	for _, f := range forms(secret) {
		if len(f) >= minFingerprint || f == secret {
			if !seen[f] {
				seen[f] = true
				s.patterns = append(s.patterns, f)
			}
		}
	}
	sort.Slice(s.patterns, func(i, j int) bool { return len(s.patterns[i]) > len(s.patterns[j]) })
	var pairs []string
	for _, p := range s.patterns {
		pairs = append(pairs, p, Placeholder)
	}
	s.replacer = strings.NewReplacer(pairs...)
}

// forms are the ways secret can appear in a server's message or an object.
func forms(secret string) []string {
	out := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	if b, err := json.Marshal(secret); err == nil {
		out = append(out, strings.Trim(string(b), `"`))
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		out = append(out, enc.EncodeToString([]byte(secret)))
		// Inside a longer encoded text the secret starts at any byte
		// offset; for each of the three alignments, the characters that
		// depend on the secret's bytes alone.
		for k := 0; k < 3; k++ {
			e := enc.EncodeToString([]byte(strings.Repeat("\x00", k) + secret))
			start := 0
			if k > 0 {
				start = 4
			}
			end := (k + len(secret)) / 3 * 4
			if end > start {
				out = append(out, e[start:end])
			}
		}
	}
	return out
}

// String returns in with every secret replaced.
func (s *Scrubber) String(in string) string {
	if s == nil {
		return in
	}
	s.mu.RLock()
	r := s.replacer
	s.mu.RUnlock()
	if r == nil {
		return in
	}
	return r.Replace(in)
}

// Writer scrubs each write to w. Every caller in vllm-hpa writes whole
// lines or documents, so a secret is never split between two writes.
func (s *Scrubber) Writer(w io.Writer) io.Writer { return &writer{s: s, w: w} }

type writer struct {
	s *Scrubber
	w io.Writer
}

func (w *writer) Write(p []byte) (int, error) {
	out := w.s.String(string(p))
	if _, err := io.WriteString(w.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}
