package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/vllm-hpa/vllm-hpa/internal/environ"
)

// DefaultFile is read from the working directory when --config is not given.
const DefaultFile = "vllm-hpa.yaml"

// TokenEnv is the environment variable the Hugging Face token is read from.
const TokenEnv = "HF_TOKEN"

// ConfigFlag names the flag that points at the config file.
const ConfigFlag = "config"

// AddGlobalFlags registers --config and the flags of every global setting
// (how to reach the project and the cluster), for the root command.
func AddGlobalFlags(fs *pflag.FlagSet) {
	fs.String(ConfigFlag, "", "config file (default ./"+DefaultFile+" if present; env "+EnvPrefix+"_CONFIG)")
	AddFlags(fs, func(s Setting) bool { return s.Global })
}

// AddFlagsFor registers the flags of the settings keys (those that have
// one), in the order of Settings.
func AddFlagsFor(fs *pflag.FlagSet, keys []string) {
	AddFlags(fs, func(s Setting) bool { return !s.Global && slices.Contains(keys, s.Key) })
}

// ChangeKeys are the settings that say how to change what exists (take
// objects over, force fields): a command that only reads has none.
var ChangeKeys = []string{"adopt", "kube.force-conflicts", "identity.adopt-existing-gsa"}

// AddFlags registers a flag for every setting with a flag that keep
// accepts, with the default configuration's value as its shown default.
func AddFlags(fs *pflag.FlagSet, keep func(Setting) bool) {
	def := Default()
	values := map[string]reflect.Value{}
	for _, f := range fields(&def) {
		values[f.key] = f.value
	}
	for _, s := range Settings {
		if s.Flag == "" || !keep(s) || fs.Lookup(s.Flag) != nil {
			continue
		}
		usage := s.Usage + " (env " + s.Env() + ")"
		short := Shorthands[s.Flag]
		switch v := values[s.Key].Interface().(type) {
		case string:
			fs.StringP(s.Flag, short, v, usage)
		case int32:
			fs.Int32P(s.Flag, short, v, usage)
		case float64:
			fs.Float64P(s.Flag, short, v, usage)
		case bool:
			fs.BoolP(s.Flag, short, v, usage)
		case time.Duration:
			fs.DurationP(s.Flag, short, v, usage)
		default:
			panic(fmt.Sprintf("config: no flag type for %s (%T)", s.Key, v))
		}
	}
}

// Shorthands are the one-letter flags, as kubectl spells them.
var Shorthands = map[string]string{"namespace": "n"}

// Load builds the effective configuration with precedence flag > environment
// > config file > default, then reads the Hugging Face token. Environment
// variables and relative paths come from env, never from the process, so
// that one process can load many configurations at once. It does not
// validate (see Validate). Errors are *FieldError where a field is to blame.
//
// The config file is --config (or VLLM_HPA_CONFIG), "-" for stdin, else
// ./vllm-hpa.yaml when it exists; File says which was read. A project not
// given is taken, as Google's own tools take it, from CLOUDSDK_CORE_PROJECT,
// gcloud's active configuration, then GOOGLE_CLOUD_PROJECT; Origin says
// from where. A token that is malformed or cannot be read does not fail
// the load: commands that write or check it ask TokenProblem.
func Load(fs *pflag.FlagSet, env environ.Env, stdin io.Reader) (*Config, error) {
	cfg := Default()
	v := viper.New()
	v.SetConfigType("yaml")

	file, err := readConfigFile(v, fs, env, stdin)
	if err != nil {
		return nil, err
	}
	cfg.file = file
	leaves := fields(&cfg)
	known := map[string]bool{}
	for _, f := range leaves {
		known[f.key] = true
		v.SetDefault(f.key, formatValue(f.value))
		if _, ok := SettingByKey(f.key); !ok {
			panic("config: no Setting documents " + f.key)
		}
	}
	if err := unknownKeys(v, known); err != nil {
		return nil, err
	}

	var errs []error
	cfg.given = map[string]bool{}
	for _, f := range leaves {
		raw, given := rawValue(f.key, v, fs, env)
		cfg.given[f.key] = given
		if err := setField(f, raw); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, key := range pathKeys {
		f := fieldByKey(leaves, key)
		f.value.SetString(env.Path(f.value.String()))
	}
	if !cfg.given["project"] {
		if project, origin := googleProject(env); project != "" {
			cfg.Project = project
			cfg.SetOrigin("project", origin)
		}
	}
	// gs://b/m/ and gs://b/m are one directory: one rendering, so that
	// a trailing slash does not restart every pod.
	if strings.HasPrefix(cfg.Workload.ModelSource, GCSPrefix) && !strings.HasSuffix(cfg.Workload.ModelSource, "//") {
		cfg.Workload.ModelSource = strings.TrimSuffix(cfg.Workload.ModelSource, "/")
	}
	if cfg.Workload.ModelSource != "" && !cfg.given["workload.image"] {
		// The default image's vLLM cannot stream from Cloud Storage.
		cfg.Workload.Image = StreamerImage
		cfg.SetOrigin("workload.image", "the default with workload.model-source")
	}
	cfg.HFToken.problem = loadToken(&cfg, env)
	return &cfg, nil
}

// pathKeys are settings that name local files: relative to the working
// directory of the command, as a shell user expects.
var pathKeys = []string{"hf-token.file", "kube.kubeconfig"}

// rawValue is key's value by precedence: a flag the user set, else its
// environment variable, else the config file or the default (viper); given
// is false for the default.
func rawValue(key string, v *viper.Viper, fs *pflag.FlagSet, env environ.Env) (raw string, given bool) {
	s, _ := SettingByKey(key)
	if s.Flag != "" && fs != nil {
		if fl := fs.Lookup(s.Flag); fl != nil && fl.Changed {
			return fl.Value.String(), true
		}
	}
	if val, ok := env.Lookup(s.Env()); ok {
		return val, true
	}
	return fmt.Sprint(v.Get(key)), v.InConfig(key)
}

func fieldByKey(fs []field, key string) field {
	for _, f := range fs {
		if f.key == key {
			return f
		}
	}
	panic("config: no field " + key)
}

// StdinFile is the --config value that reads the file from stdin.
const StdinFile = "-"

// readConfigFile reads the config file into v and returns its path (""
// when there is none, StdinFile for stdin).
func readConfigFile(v *viper.Viper, fs *pflag.FlagSet, env environ.Env, stdin io.Reader) (string, error) {
	path := env.Get(EnvPrefix + "_CONFIG")
	if fs != nil {
		if fl := fs.Lookup(ConfigFlag); fl != nil && fl.Changed {
			path = fl.Value.String()
		}
	}
	bad := func(why string) error {
		return &FieldError{Field: "--" + ConfigFlag, Value: path, Allowed: "a readable YAML file: " + why}
	}
	switch path {
	case "":
		if _, err := os.Stat(env.Path(DefaultFile)); err != nil {
			return "", nil // no file is fine: defaults, env and flags
		}
		path = DefaultFile
	case StdinFile:
		if stdin == nil {
			return "", bad("no standard input to read")
		}
		b, err := io.ReadAll(io.LimitReader(stdin, maxConfigFileSize+1))
		switch {
		case err != nil:
			return "", bad(firstLine(err.Error()))
		case len(b) > maxConfigFileSize:
			return "", bad(fmt.Sprintf("standard input holds more than %d bytes", maxConfigFileSize))
		}
		if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
			return "", bad(firstLine(err.Error()))
		}
		return StdinFile, nil
	}
	if err := checkSmallRegularFile(env.Path(path), maxConfigFileSize); err != nil {
		return "", bad(err.Error())
	}
	v.SetConfigFile(env.Path(path))
	if err := v.ReadInConfig(); err != nil {
		return "", bad(firstLine(err.Error()))
	}
	return env.Path(path), nil
}

// unknownKeys rejects keys in the config file that no setting has, so that a
// typo such as hpa.max-replica is an error rather than silently ignored.
func unknownKeys(v *viper.Viper, known map[string]bool) error {
	var bad []string
	for _, k := range v.AllKeys() {
		if !known[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	var errs []error
	for _, k := range bad {
		errs = append(errs, fmt.Errorf("config file: unknown key %q: see `vllm-hpa config view` or the README for the keys", k))
	}
	return errors.Join(errs...)
}

// setField parses raw into the field's type.
func setField(f field, raw string) error {
	bad := func(allowed string) error {
		return newFieldError(f.key, raw, allowed)
	}
	switch f.value.Interface().(type) {
	case string:
		f.value.SetString(strings.TrimSpace(raw))
	case int32:
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 32)
		if err != nil {
			return bad("a whole number")
		}
		f.value.SetInt(n)
	case float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil {
			return bad("a number")
		}
		f.value.SetFloat(x)
	case bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return bad("true or false")
		}
		f.value.SetBool(b)
	case time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return bad("a duration with a unit, such as 15s, 2m or 1h30m")
		}
		f.value.SetInt(int64(d))
	default:
		panic("config: unsupported field type for " + f.key)
	}
	return nil
}

// MaxTokenFileSize bounds what is read from hf-token.file: a Hugging Face
// token is about 40 bytes, so anything much larger is the wrong file.
const MaxTokenFileSize = 4096

// maxConfigFileSize bounds the config file.
const maxConfigFileSize = 1 << 20

// loadToken reads the Hugging Face token from hf-token.file, else HF_TOKEN.
// The file must be a small regular file: a FIFO would block, a device such
// as /dev/zero would never end, and a directory is a mistake.
func loadToken(cfg *Config, env environ.Env) error {
	path := cfg.HFToken.File
	if path == "" {
		token := strings.TrimSpace(env.Get(TokenEnv))
		cfg.HFToken.raw = token
		if err := checkToken(token); err != "" {
			// The value is never shown, not even when it is wrong.
			return &FieldError{Field: TokenEnv, Value: fmt.Sprintf("(not shown; length %d)", len(token)), Allowed: "a Hugging Face token: " + err}
		}
		cfg.HFToken.value = token
		return nil
	}
	bad := func(why string) error {
		return newFieldError("hf-token.file", path, "a readable file holding only the Hugging Face token ("+why+")")
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return bad(firstLine(err.Error()))
	case !fi.Mode().IsRegular():
		return bad("it is a " + fileKind(fi.Mode()) + ", not a regular file")
	case fi.Size() > MaxTokenFileSize:
		return bad(fmt.Sprintf("it has %d bytes; a token file has at most %d", fi.Size(), MaxTokenFileSize))
	}
	f, err := os.Open(path)
	if err != nil {
		return bad(firstLine(err.Error()))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxTokenFileSize+1))
	if err != nil {
		return bad(firstLine(err.Error()))
	}
	if len(b) > MaxTokenFileSize {
		return bad(fmt.Sprintf("it holds more than %d bytes", MaxTokenFileSize))
	}
	token := strings.TrimSpace(string(b))
	cfg.HFToken.raw = token
	if token == "" {
		return bad("it is empty")
	}
	if err := checkToken(token); err != "" {
		return bad(err)
	}
	cfg.HFToken.value = token
	return nil
}

// MinTokenLength: Hugging Face tokens are hf_ and 34 more characters. A
// much shorter value is a mistake, and one too short to be scrubbed from
// output without mangling it (see internal/redact).
const MinTokenLength = 8

// checkToken says what is wrong with a token ("" if nothing; "" is no
// token, which is not wrong here).
func checkToken(token string) string {
	switch {
	case token == "":
		return ""
	case strings.ContainsAny(token, " \t\r\n") || !utf8.ValidString(token):
		return "one word; put only the token in it"
	case len(token) < MinTokenLength:
		return fmt.Sprintf("hf_ followed by about 34 characters, at least %d in all", MinTokenLength)
	}
	return ""
}

// checkSmallRegularFile refuses what cannot be read as a file of at most
// limit bytes.
func checkSmallRegularFile(path string, limit int64) error {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return errors.New(firstLine(err.Error()))
	case !fi.Mode().IsRegular():
		return fmt.Errorf("it is a %s, not a regular file", fileKind(fi.Mode()))
	case fi.Size() > limit:
		return fmt.Errorf("it has %d bytes, more than %d", fi.Size(), limit)
	}
	return nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeDevice != 0:
		return "device"
	case m&os.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ReadSmallFile reads a regular file of at most limit bytes; a directory,
// device, FIFO or larger file is refused before anything is read, and one
// that grew past limit since is refused too.
func ReadSmallFile(path string, limit int64) ([]byte, error) {
	if err := checkSmallRegularFile(path, limit); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.New(firstLine(err.Error()))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("it holds more than %d bytes", limit)
	}
	return b, err
}
