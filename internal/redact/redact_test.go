package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

func TestScrubsEveryForm(t *testing.T) {
	const token = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
	var s Scrubber
	s.Add(token)
	// The token inside longer encoded texts, at each byte alignment: as in
	// a Secret's data, or a whole object encoded.
	var cases []string
	for _, prefix := range []string{"", "x", "xy", "xyz", `{"data":{"hf_token":"`} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding} {
			cases = append(cases, enc.EncodeToString([]byte(prefix+token+`"}}`)))
		}
	}
	j, _ := json.Marshal(map[string]string{"msg": "refused " + token})
	cases = append(cases, token, "token="+url.QueryEscape(token), string(j), "a "+token+" b "+token)
	for _, c := range cases {
		got := s.String("message: " + c)
		if strings.Contains(got, token) {
			t.Errorf("%q: token left in %q", c, got)
		}
		if !strings.Contains(got, Placeholder) {
			t.Errorf("%q: nothing replaced: %q", c, got)
		}
		// What is left of an encoded form never decodes to the token.
		for _, word := range strings.FieldsFunc(got, func(r rune) bool { return r == ' ' || r == '<' || r == '>' }) {
			if b, err := base64.StdEncoding.DecodeString(word); err == nil && bytes.Contains(b, []byte(token)) {
				t.Errorf("%q: %q still decodes to the token", c, word)
			}
		}
	}
}

func TestWriterAndNothingElse(t *testing.T) {
	var s Scrubber
	var b bytes.Buffer
	w := s.Writer(&b)
	w.Write([]byte("before any secret: hf_x\n"))
	s.Add("hf_secretVALUE")
	s.Add("")
	w.Write([]byte("now hf_secretVALUE and hf_other\n"))
	if got := b.String(); got != "before any secret: hf_x\nnow <redacted> and hf_other\n" {
		t.Errorf("got %q", got)
	}
}
