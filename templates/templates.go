// Package templates holds every Kubernetes object of the stack as a Go
// text/template, one file per step, embedded in the binary. internal/render
// executes them with the configuration as their only input.
package templates

import "embed"

// FS holds the *.yaml.tmpl files.
//
//go:embed *.yaml.tmpl
var FS embed.FS
