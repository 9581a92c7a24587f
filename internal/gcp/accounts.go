package gcp

import (
	"context"
	"fmt"

	"cloud.google.com/go/iam/admin/apiv1/adminpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// MaxDescription is the longest description a service account may have
// (UTF-8 bytes); IAM refuses longer ones.
const MaxDescription = 256

// AccountName is the IAM resource name of a service account.
func AccountName(project, email string) string {
	return "projects/" + project + "/serviceAccounts/" + email
}

// Accounts are the service accounts of one project, through the IAM admin
// API, each call retried on transient failures.
type Accounts struct {
	Clients *Clients
	Project string
}

// Get reads the account with email.
func (a Accounts) Get(ctx context.Context, email string) (sa *adminpb.ServiceAccount, err error) {
	_, err = Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
		sa, err = a.Clients.IAM.GetServiceAccount(ctx, &adminpb.GetServiceAccountRequest{Name: AccountName(a.Project, email)})
		return err
	})
	return sa, err
}

// Create creates account id with a display name and a description.
func (a Accounts) Create(ctx context.Context, id, displayName, description string) (sa *adminpb.ServiceAccount, retries int, err error) {
	if len(description) > MaxDescription {
		return nil, 0, fmt.Errorf("description of %d bytes, more than IAM's %d", len(description), MaxDescription)
	}
	retries, err = Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
		sa, err = a.Clients.IAM.CreateServiceAccount(ctx, &adminpb.CreateServiceAccountRequest{
			Name:           "projects/" + a.Project,
			AccountId:      id,
			ServiceAccount: &adminpb.ServiceAccount{DisplayName: displayName, Description: description},
		})
		return err
	})
	return sa, retries, err
}

// SetDescription changes only the account's description.
func (a Accounts) SetDescription(ctx context.Context, sa *adminpb.ServiceAccount, description string) error {
	if len(description) > MaxDescription {
		return fmt.Errorf("description of %d bytes, more than IAM's %d", len(description), MaxDescription)
	}
	_, err := Retry(ctx, DefaultBackoff, func(ctx context.Context) error {
		_, err := a.Clients.IAM.PatchServiceAccount(ctx, &adminpb.PatchServiceAccountRequest{
			ServiceAccount: &adminpb.ServiceAccount{Name: sa.Name, Description: description},
			UpdateMask:     &fieldmaskpb.FieldMask{Paths: []string{"description"}},
		})
		return err
	})
	return err
}

// Delete deletes the account with email.
func (a Accounts) Delete(ctx context.Context, email string) error {
	_, err := Retry(ctx, DefaultBackoff, func(ctx context.Context) error {
		return a.Clients.IAM.DeleteServiceAccount(ctx, &adminpb.DeleteServiceAccountRequest{Name: AccountName(a.Project, email)})
	})
	return err
}
