package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DefaultFile is read from the working directory when --config is not given.
const DefaultFile = "vllm-hpa.yaml"

// TokenEnv is the environment variable the Hugging Face token is read from.
const TokenEnv = "HF_TOKEN"

// ConfigFlag names the flag that points at the config file.
const ConfigFlag = "config"

// AddFlags registers a flag for every setting that has one, with the
// default configuration's value as its shown default.
func AddFlags(fs *pflag.FlagSet) {
	def := Default()
	values := map[string]reflect.Value{}
	for _, f := range fields(&def) {
		values[f.key] = f.value
	}
	fs.String(ConfigFlag, "", "config file (default ./"+DefaultFile+" if present; env "+EnvPrefix+"_CONFIG)")
	for _, s := range Settings {
		if s.Flag == "" {
			continue
		}
		usage := s.Usage + " (env " + s.Env() + ")"
		switch v := values[s.Key].Interface().(type) {
		case string:
			fs.String(s.Flag, v, usage)
		case int32:
			fs.Int32(s.Flag, v, usage)
		case float64:
			fs.Float64(s.Flag, v, usage)
		case bool:
			fs.Bool(s.Flag, v, usage)
		case time.Duration:
			fs.Duration(s.Flag, v, usage)
		default:
			panic(fmt.Sprintf("config: no flag type for %s (%T)", s.Key, v))
		}
	}
}

// Load builds the effective configuration with precedence flag > environment
// > config file > default, then reads the Hugging Face token. It does not
// validate (see Validate). Errors are *FieldError where a field is to blame.
func Load(fs *pflag.FlagSet) (*Config, error) {
	cfg := Default()
	v := viper.New()
	v.SetConfigType("yaml")

	if err := readConfigFile(v, fs); err != nil {
		return nil, err
	}
	leaves := fields(&cfg)
	known := map[string]bool{}
	for _, f := range leaves {
		known[f.key] = true
		v.SetDefault(f.key, formatValue(f.value))
		s, ok := SettingByKey(f.key)
		if !ok {
			panic("config: no Setting documents " + f.key)
		}
		if err := v.BindEnv(f.key, s.Env()); err != nil {
			return nil, err
		}
		if s.Flag != "" && fs != nil {
			if fl := fs.Lookup(s.Flag); fl != nil {
				if err := v.BindPFlag(f.key, fl); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := unknownKeys(v, known); err != nil {
		return nil, err
	}

	var errs []error
	for _, f := range leaves {
		if err := setField(f, fmt.Sprint(v.Get(f.key))); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := loadToken(&cfg); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func readConfigFile(v *viper.Viper, fs *pflag.FlagSet) error {
	path := os.Getenv(EnvPrefix + "_CONFIG")
	if fs != nil {
		if fl := fs.Lookup(ConfigFlag); fl != nil && fl.Changed {
			path = fl.Value.String()
		}
	}
	if path == "" {
		if _, err := os.Stat(DefaultFile); err != nil {
			return nil // no file is fine: defaults, env and flags
		}
		path = DefaultFile
	}
	v.SetConfigFile(path)
	if err := v.ReadInConfig(); err != nil {
		return &FieldError{Field: "--" + ConfigFlag, Value: path, Allowed: "a readable YAML file: " + firstLine(err.Error())}
	}
	return nil
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

// loadToken reads the Hugging Face token from hf-token.file, else HF_TOKEN.
func loadToken(cfg *Config) error {
	if cfg.HFToken.File != "" {
		b, err := os.ReadFile(cfg.HFToken.File)
		if err != nil {
			return newFieldError("hf-token.file", cfg.HFToken.File, "a readable file holding the Hugging Face token")
		}
		cfg.HFToken.value = strings.TrimSpace(string(b))
		if cfg.HFToken.value == "" {
			return newFieldError("hf-token.file", cfg.HFToken.File, "a file holding the Hugging Face token, but it is empty")
		}
		return nil
	}
	cfg.HFToken.value = strings.TrimSpace(os.Getenv(TokenEnv))
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
