package cmd

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set by the Makefile with -ldflags -X.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	Date      string `json:"date,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
	Module    string `json:"module,omitempty"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Module = bi.Main.Path
		if v.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version // go install module@version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && v.Commit == "":
				v.Commit = s.Value
			case s.Key == "vcs.time" && v.Date == "":
				v.Date = s.Value
			}
		}
	}
	return v
}

func newVersionCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Annotations: map[string]string{localOnly: "true"},
		Use:         "version",
		Short:       "Print the version and build information",
		Args:        noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := buildVersion()
			if done, err := g.printDoc(v); done {
				return err
			}
			fmt.Fprintf(g.streams.Out, "vllm-hpa %s\n", v.Version)
			if v.Commit != "" {
				fmt.Fprintf(g.streams.Out, "commit:   %s\n", v.Commit)
			}
			if v.Date != "" {
				fmt.Fprintf(g.streams.Out, "built:    %s\n", v.Date)
			}
			fmt.Fprintf(g.streams.Out, "go:       %s %s\n", v.GoVersion, v.Platform)
			return nil
		},
	}
}
