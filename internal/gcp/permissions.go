package gcp

import (
	"context"
	"slices"
	"strings"

	admin "cloud.google.com/go/iam/admin/apiv1"
	"cloud.google.com/go/iam/apiv1/iampb"
	resourcemanager "cloud.google.com/go/resourcemanager/apiv3"
	"google.golang.org/grpc/codes"
)

// Permissions the stack's Google side uses, by what it does. testIam-
// Permissions answers for a project the caller may read; these are asked
// of it (the iam.serviceAccounts.* ones hold for every account when
// granted on the project) before anything is changed.
var (
	// PermissionsProject: read the project and change its IAM policy
	// (the roles/monitoring.viewer grant) by read-modify-write.
	PermissionsProject = []string{"resourcemanager.projects.get", "resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy"}
	// PermissionsAccount: the gsa route's service account, its policy
	// (roles/iam.workloadIdentityUser), and its deletion by cleanup.
	PermissionsAccount = []string{"iam.serviceAccounts.create", "iam.serviceAccounts.get", "iam.serviceAccounts.getIamPolicy", "iam.serviceAccounts.setIamPolicy", "iam.serviceAccounts.delete"}
	// PermissionsCluster: the cluster's settings, read for the
	// preconditions (and the connection through the container API).
	PermissionsCluster = []string{"container.clusters.get"}
	// PermissionsServiceUsage: whether the APIs are enabled.
	PermissionsServiceUsage = []string{"serviceusage.services.get"}
)

// MissingPermissions asks testIamPermissions, on the project, which of
// perms the caller lacks; the iam.serviceAccounts.* ones still missing are
// asked again of the account, when it exists (a grant on the account
// alone is enough). Errors are classified (a project the caller may not
// see at all: exit 6).
func MissingPermissions(ctx context.Context, projects *resourcemanager.ProjectsClient, iam *admin.IamClient, project, accountEmail string, perms []string) ([]string, error) {
	held, err := projects.TestIamPermissions(ctx, &iampb.TestIamPermissionsRequest{Resource: "projects/" + project, Permissions: perms})
	if err != nil {
		return nil, Classify(err, "testIamPermissions on project "+project)
	}
	missing := slices.DeleteFunc(slices.Clone(perms), func(p string) bool { return slices.Contains(held.GetPermissions(), p) })
	var onAccount []string
	for _, p := range missing {
		if strings.HasPrefix(p, "iam.serviceAccounts.") && p != "iam.serviceAccounts.create" {
			onAccount = append(onAccount, p)
		}
	}
	if accountEmail == "" || len(onAccount) == 0 || iam == nil {
		return missing, nil
	}
	res, err := iam.TestIamPermissions(ctx, &iampb.TestIamPermissionsRequest{Resource: AccountName(project, accountEmail), Permissions: onAccount})
	if d, ok := DetailsOf(err); ok && (d.Code == codes.NotFound || d.Code == codes.PermissionDenied) {
		// No account yet, or one IAM does not show this caller: the
		// project's answer stands.
		return missing, nil
	} else if err != nil {
		return nil, Classify(err, "testIamPermissions on service account "+accountEmail)
	}
	return slices.DeleteFunc(missing, func(p string) bool { return slices.Contains(res.GetPermissions(), p) }), nil
}
