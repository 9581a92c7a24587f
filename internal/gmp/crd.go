package gmp

import _ "embed"

// CRD is the PodMonitoring CustomResourceDefinition (YAML) that the tests
// and the local emulator install.
//
//go:embed crd.yaml
var CRD []byte

// OperatorConfigCRD is the OperatorConfig CustomResourceDefinition (YAML)
// that the tests and the local emulator install.
//
//go:embed operatorconfig.yaml
var OperatorConfigCRD []byte
