//! What every page's frame needs: the CSRF token, the signed-in person and
//! their organizations, a flash message, and which links to show.

use crate::auth::session::SignedIn;
use crate::web::assets::HTMX_PATH;

pub struct NavOrg {
    pub id: i64,
    pub name: String,
}

pub struct Nav {
    pub email: String,
    pub orgs: Vec<NavOrg>,
    pub current_org: String,
    pub current_org_id: i64,
    pub superuser: bool,
    /// Which navigation entry is the current page.
    pub active: &'static str,
}

pub struct Layout {
    pub csrf: String,
    pub nav: Option<Nav>,
    pub flash: Option<String>,
    /// Show the link to the development mailbox.
    pub dev_mail: bool,
    /// The Team page exists (shown to superusers).
    pub team_page: bool,
    pub htmx_path: &'static str,
}

impl Layout {
    pub fn anonymous(csrf: &str, dev_mail: bool) -> Layout {
        Layout {
            csrf: csrf.to_string(),
            nav: None,
            flash: None,
            dev_mail,
            team_page: false,
            htmx_path: HTMX_PATH,
        }
    }

    pub fn signed_in(csrf: &str, dev_mail: bool, who: &SignedIn, active: &'static str) -> Layout {
        Layout {
            nav: Some(Nav {
                email: who.email.clone(),
                orgs: who
                    .memberships
                    .iter()
                    .map(|m| NavOrg {
                        id: m.organization.id,
                        name: m.organization.name.clone(),
                    })
                    .collect(),
                current_org: who.membership.organization.name.clone(),
                current_org_id: who.organization_id(),
                superuser: who.is_superuser(),
                active,
            }),
            // The Team page exists; the frame shows its link to superusers.
            team_page: true,
            ..Layout::anonymous(csrf, dev_mail)
        }
    }

    pub fn with_flash(mut self, flash: Option<String>) -> Layout {
        self.flash = flash;
        self
    }
}
