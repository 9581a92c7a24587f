package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
)

type renderOptions struct {
	*globalOptions
	listSteps       bool
	includeIdentity bool
	format          string
	only            string // the step named, or "" for all
	dir             string // --format kustomize: where to write
	steps           []render.Source
	cfg             *config.Config
}

// render's formats.
const (
	formatYAML      = "yaml"
	formatKustomize = "kustomize"
	formatGcloud    = "gcloud"
)

// renderedNames are the steps with objects of their own.
func renderedNames() []string {
	var out []string
	for _, s := range steps.Rendered() {
		out = append(out, s.Step)
	}
	return out
}

func newRenderCmd(g *globalOptions) *cobra.Command {
	o := &renderOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "render [STEP]",
		Short: "Print the stack's Kubernetes objects as YAML (all steps, or one)",
		Long: `Print the rendered objects of every step (or of one: ` + strings.Join(renderedNames(), ", ") + `)
as a multi-document YAML stream that kubectl apply -f - accepts (--output
json: a v1 List). The Secret holding the Hugging Face token is left out,
and stderr says how to create it: applying a copy would overwrite the real
token.

For GitOps, everything the cluster and the project need:
--include-identity adds the Workload Identity annotation to the adapter's
ServiceAccount (what the identity step sets); --format kustomize DIR writes
one file per step and a kustomization.yaml that kubectl kustomize builds,
with google.sh, the identity step's Google side as gcloud commands;
--format gcloud prints those commands alone. The Deployment carries no
replicas: the HPA owns them, and a GitOps sync must not reset them.`,
		Example:   "  vllm-hpa render --project my-proj\n  vllm-hpa render adapter --project my-proj | kubectl apply -f -\n  vllm-hpa render --list-steps\n  vllm-hpa render --project my-proj --include-identity --format kustomize stack\n  vllm-hpa render --project my-proj --format gcloud",
		ValidArgs: renderedNames(),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return exitcode.With(exitcode.BadInput, fmt.Errorf("render takes at most one step (or, with --format kustomize, the directory), got %q", args))
			}
			return nil
		},
		RunE: runCommand(o, nil),
	}
	c.Flags().BoolVar(&o.includeIdentity, "include-identity", false, "add the Workload Identity annotation to the adapter's ServiceAccount, as the identity step sets it")
	c.Flags().StringVar(&o.format, "format", formatYAML, "yaml (one stream), kustomize DIR (a file per step and a kustomization.yaml, with google.sh), or gcloud (the Google side as gcloud commands)")
	_ = c.RegisterFlagCompletionFunc("format", fixedCompletion(formatYAML, formatKustomize, formatGcloud))
	c.Flags().BoolVar(&o.listSteps, "list-steps", false, "print the steps that render objects, in the walkthrough's order, one a line (scripts read them here), and nothing else")
	config.AddFlagsFor(c.Flags(), steps.ReadSettings())
	registerEnumCompletions(c, g)
	return c
}

// stepListJSON is render --list-steps' --output json document.
type stepListJSON struct {
	result
	Steps []string `json:"steps"`
}

// Complete loads the configuration and chooses the steps: the whole
// stack of the configured backend, or the one named.
func (o *renderOptions) Complete(cmd *cobra.Command, args []string) (err error) {
	if o.listSteps && len(args) > 0 {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("render --list-steps takes no step, got %q", args))
	}
	if o.listSteps {
		return nil // reads no configuration
	}
	if o.cfg, err = o.loadConfig(cmd); err != nil {
		return err
	}
	o.only, o.dir = "", ""
	if len(args) == 1 {
		if o.format == formatKustomize {
			o.dir = o.f.Env.Path(args[0])
		} else {
			o.only = args[0]
		}
	}
	return nil
}

// Validate checks the configuration and the step named.
func (o *renderOptions) Validate() error {
	if o.listSteps {
		return nil
	}
	if err := validateConfig(o.cfg, true); err != nil {
		return err
	}
	switch o.format {
	case formatYAML:
	case formatGcloud:
		if o.only != "" || o.output != outputText {
			return exitcode.With(exitcode.BadInput, errors.New("render --format gcloud prints a shell script of the identity step's Google side: it takes no step and no --output json/yaml"))
		}
	case formatKustomize:
		if o.dir == "" {
			return exitcode.With(exitcode.BadInput, errors.New("render --format kustomize needs the directory to write: render --format kustomize DIR"))
		}
		if fi, err := os.Stat(o.dir); err == nil && !fi.IsDir() {
			return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid directory %q: it is a file", o.dir))
		}
		if o.output != outputText {
			return exitcode.With(exitcode.BadInput, errors.New("render --format kustomize writes files: --output json/yaml does not apply"))
		}
	default:
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --format %q: must be one of %s, %s, %s", o.format, formatYAML, formatKustomize, formatGcloud))
	}
	if o.only == "" {
		return nil
	}
	if !slices.Contains(renderedNames(), o.only) {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid step %q: must be one of %s", o.only, strings.Join(renderedNames(), ", ")))
	}
	return nil
}

// Run prints the objects; the token Secret is never among them.
func (o *renderOptions) Run(ctx context.Context) error {
	if o.listSteps {
		if done, err := o.printDoc(stepListJSON{resultOf(o.command, nil), renderedNames()}); done {
			return err
		}
		_, err := fmt.Fprintln(o.streams.Out, strings.Join(renderedNames(), "\n"))
		return err
	}
	if note := steps.ResolveOffline(o.cfg); note != "" {
		fmt.Fprintln(o.streams.ErrOut, "note: "+note)
	}
	o.steps = slices.DeleteFunc(steps.Rendered(), func(s render.Source) bool {
		if o.only != "" {
			return s.Step != o.only
		}
		d, _ := steps.Lookup(s.Step) // the whole stack of the configured backend
		return !steps.Used(d, o.cfg)
	})
	if o.format == formatGcloud {
		return o.printGcloud(ctx)
	}
	// No token Secret when the weights come from a bucket.
	if slices.ContainsFunc(o.steps, func(s render.Source) bool { return s.Step == deploy.Name }) && o.cfg.Workload.ServiceAccount() == "" {
		fmt.Fprintln(o.streams.ErrOut, "note: "+render.TokenSecretNote(o.cfg))
	}
	docs, err := o.renderSteps(ctx)
	if err != nil {
		return err
	}
	switch {
	case o.format == formatKustomize:
		return o.writeKustomization(ctx, docs)
	case o.output == outputJSON || o.output == outputYAML:
		// One document, a v1 List, in either form (kubectl apply -f -
		// accepts it); the text output is the stream.
		list := map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{}}
		for _, d := range docs {
			for _, obj := range d.objects {
				list["items"] = append(list["items"].([]any), obj.Object)
			}
		}
		_, err := o.printDoc(list)
		return err
	}
	o.printedDoc = true
	for _, d := range docs {
		if _, err := o.streams.Out.Write(d.yaml); err != nil {
			return err
		}
	}
	return nil
}

// renderedStep is one step's objects, and its YAML as the template
// writes it (comments kept), the token Secret left out.
type renderedStep struct {
	step    string
	objects []*unstructured.Unstructured
	yaml    []byte
}

// renderSteps renders the chosen steps; with --include-identity, the
// identity step's plan (the KSA's annotation) is merged into the objects
// it changes, and their YAML is written from the objects.
func (o *renderOptions) renderSteps(ctx context.Context) ([]renderedStep, error) {
	var identityObjects []*unstructured.Unstructured
	if o.includeIdentity {
		p, err := o.identityPlan(ctx)
		if err != nil {
			return nil, err
		}
		if p != nil {
			identityObjects = p.Objects
		}
	}
	var out []renderedStep
	for _, src := range o.steps {
		objs, err := render.Objects(o.cfg, src.Step, src.Shared)
		if err != nil {
			return nil, err
		}
		objs = slices.DeleteFunc(objs, func(obj *unstructured.Unstructured) bool { return render.IsTokenSecret(o.cfg, obj) })
		merged := false
		for _, obj := range objs {
			for _, id := range identityObjects {
				if sameObject(obj, id) {
					mergeMetadata(obj, id)
					merged = true
				}
			}
		}
		y, err := render.AllYAML(o.cfg, src)
		if err != nil {
			return nil, err
		}
		if merged {
			if y, err = objectsYAML(src.Step, objs); err != nil {
				return nil, err
			}
		}
		out = append(out, renderedStep{step: src.Step, objects: objs, yaml: y})
	}
	return out, nil
}

// identityPlan is the identity step's plan, or nil when the backend uses
// no identity (native).
func (o *renderOptions) identityPlan(ctx context.Context) (*step.Plan, error) {
	d, _ := steps.Lookup(identity.Name)
	if !steps.Used(d, o.cfg) {
		return nil, nil
	}
	st, err := steps.New(o.cfg, step.Deps{}).Step(identity.Name)
	if err != nil {
		return nil, err
	}
	return st.Plan(ctx)
}

func sameObject(a, b *unstructured.Unstructured) bool {
	return a.GetKind() == b.GetKind() && a.GetNamespace() == b.GetNamespace() && a.GetName() == b.GetName()
}

// mergeMetadata adds from's annotations to obj.
func mergeMetadata(obj, from *unstructured.Unstructured) {
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	for k, v := range from.GetAnnotations() {
		ann[k] = v
	}
	obj.SetAnnotations(ann)
}

// objectsYAML writes objs as render's stream does.
func objectsYAML(stepName string, objs []*unstructured.Unstructured) ([]byte, error) {
	var b strings.Builder
	for _, obj := range objs {
		y, err := yaml.Marshal(obj.Object)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "---\n# Source: vllm-hpa %s\n%s", stepName, y)
	}
	return []byte(b.String()), nil
}

// writeKustomization writes DIR/STEP.yaml for each step, a
// kustomization.yaml listing them, and google.sh with the Google side.
func (o *renderOptions) writeKustomization(ctx context.Context, docs []renderedStep) error {
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# Written by vllm-hpa render --format kustomize: the stack's objects.\n")
	b.WriteString("# The token Secret is not here (see render's note); google.sh holds the\n# Google side.\n")
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
	var written []string
	for _, d := range docs {
		name := d.step + ".yaml"
		if err := os.WriteFile(filepath.Join(o.dir, name), d.yaml, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&b, "- %s\n", name)
		written = append(written, name)
	}
	if err := os.WriteFile(filepath.Join(o.dir, "kustomization.yaml"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	written = append(written, "kustomization.yaml")
	script, err := o.gcloudScript(ctx)
	if err != nil {
		return err
	}
	googleSh := filepath.Join(o.dir, "google.sh")
	if script != "" {
		if err := os.WriteFile(googleSh, []byte(script), 0o755); err != nil {
			return err
		}
		written = append(written, "google.sh")
	} else if err := os.Remove(googleSh); err != nil && !errors.Is(err, os.ErrNotExist) {
		// An earlier render's script for a stack that needs none now
		// must not be run by mistake.
		return err
	}
	o.printedDoc = true
	fmt.Fprintf(o.streams.Out, "wrote %s in %s (kubectl kustomize %s builds it)\n", strings.Join(written, ", "), o.dir, o.dir)
	return nil
}

// printGcloud prints the Google side as gcloud commands.
func (o *renderOptions) printGcloud(ctx context.Context) error {
	script, err := o.gcloudScript(ctx)
	if err != nil {
		return err
	}
	if script == "" {
		fmt.Fprintln(o.streams.ErrOut, "note: the "+o.cfg.HPA.Backend+" backend needs nothing of Google's IAM")
	}
	o.printedDoc = true
	_, err = fmt.Fprint(o.streams.Out, script)
	return err
}

// gcloudScript is the stack's Google IAM changes as a gcloud script: the
// identity step's, and deploy's model bucket grant ("" when there are
// none).
func (o *renderOptions) gcloudScript(ctx context.Context) (string, error) {
	p, err := o.identityPlan(ctx)
	if err != nil {
		return "", err
	}
	var calls []step.GCPCall
	if p != nil {
		calls = p.GCPCalls
	}
	calls = append(calls, deploy.BucketCalls(o.cfg)...)
	if len(calls) == 0 {
		return "", nil
	}
	lines, err := identity.GcloudCommands(o.cfg, calls)
	if err != nil {
		return "", err
	}
	return "#!/bin/sh\n# The stack's Google side (vllm-hpa render --format gcloud): what\n# `vllm-hpa identity` (and deploy, for a model bucket) does by etag-guarded\n# read-modify-write.\nset -eu\n" + strings.Join(lines, "\n") + "\n", nil
}
