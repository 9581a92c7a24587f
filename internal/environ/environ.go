// Package environ is what a command reads from its process besides its
// arguments: environment variables and the working directory. Commands
// take it as a value instead of calling os.Getenv or os.Getwd, so that
// tests can run many commands at once, each with an environment of its own.
package environ

import (
	"os"
	"path/filepath"
	"strings"
)

// Env is one command's environment.
type Env struct {
	lookup func(string) (string, bool)
	dir    string
	system bool
}

// System is the process's own environment and working directory.
func System() Env {
	dir, _ := os.Getwd()
	return Env{lookup: os.LookupEnv, dir: dir, system: true}
}

// New is an environment of exactly vars, in directory dir.
func New(vars map[string]string, dir string) Env {
	copied := make(map[string]string, len(vars))
	for k, v := range vars {
		copied[k] = v
	}
	return Env{lookup: func(k string) (string, bool) { v, ok := copied[k]; return v, ok }, dir: dir}
}

// Lookup returns the variable's value and whether it is set.
func (e Env) Lookup(key string) (string, bool) {
	if e.lookup == nil {
		return "", false
	}
	return e.lookup(key)
}

// Get returns the variable's value, "" when unset.
func (e Env) Get(key string) string {
	v, _ := e.Lookup(key)
	return v
}

// Dir is the working directory.
func (e Env) Dir() string { return e.dir }

// Path resolves a path given by the user against the working directory;
// "" stays "", and ~/ is the home directory, as a shell would expand it.
func (e Env) Path(p string) string {
	switch {
	case p == "":
		return ""
	case p == "~" || strings.HasPrefix(p, "~/"):
		return filepath.Join(e.Home(), strings.TrimPrefix(p, "~"))
	case filepath.IsAbs(p) || e.dir == "":
		return p
	}
	return filepath.Join(e.dir, p)
}

// Home is the user's home directory ($HOME).
func (e Env) Home() string {
	if h := e.Get("HOME"); h != "" {
		return h
	}
	if e.system {
		h, _ := os.UserHomeDir()
		return h
	}
	return ""
}
