package config

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/environ"
)

// googleProject is the project Google's own tools would use when none is
// given, and where it came from: gcloud's CLOUDSDK_CORE_PROJECT, then the
// active gcloud configuration's [core] project, then GOOGLE_CLOUD_PROJECT
// (the client libraries' variable). It reads only local files, bounded.
func googleProject(env environ.Env) (project, origin string) {
	if p := strings.TrimSpace(env.Get("CLOUDSDK_CORE_PROJECT")); p != "" {
		return p, "CLOUDSDK_CORE_PROJECT"
	}
	if p, path := gcloudProject(env); p != "" {
		return p, "gcloud configuration " + path
	}
	if p := strings.TrimSpace(env.Get("GOOGLE_CLOUD_PROJECT")); p != "" {
		return p, "GOOGLE_CLOUD_PROJECT"
	}
	return "", ""
}

// gcloudProject reads [core] project from gcloud's active configuration:
// $CLOUDSDK_CONFIG (else ~/.config/gcloud)/configurations/config_NAME,
// NAME from $CLOUDSDK_ACTIVE_CONFIG_NAME, else the file active_config,
// else "default".
func gcloudProject(env environ.Env) (project, path string) {
	dir := env.Get("CLOUDSDK_CONFIG")
	if dir == "" {
		if env.Home() == "" {
			return "", ""
		}
		dir = filepath.Join(env.Home(), ".config", "gcloud")
	}
	dir = env.Path(dir)
	name := strings.TrimSpace(env.Get("CLOUDSDK_ACTIVE_CONFIG_NAME"))
	if name == "" {
		name = strings.TrimSpace(readSmall(filepath.Join(dir, "active_config")))
	}
	if name == "" || strings.ContainsAny(name, `/\`) {
		name = "default"
	}
	path = filepath.Join(dir, "configurations", "config_"+name)
	return iniValue(readSmall(path), "core", "project"), path
}

// readSmall is a small regular file's content, "" if it is anything else.
func readSmall(path string) string {
	if checkSmallRegularFile(path, maxConfigFileSize) != nil {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxConfigFileSize))
	return string(b)
}

// iniValue is key's value in section of an INI text, as gcloud writes
// its configurations ("key = value" lines under "[section]").
func iniValue(text, section, key string) string {
	in := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			in = strings.TrimSpace(strings.Trim(line, "[]")) == section
		case in:
			k, v, ok := strings.Cut(line, "=")
			if ok && strings.TrimSpace(k) == key {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}
