//! The self-service page's HTML, written with maud: checked when compiled, every value escaped,
//! no JavaScript, one small style sheet that reads well on a phone.

use maud::{html, Markup, DOCTYPE};
use msngate_bridge_api::{LinkArg, LinkArgKind};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;max-width:34rem;margin:0 auto;padding:1rem;line-height:1.4;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
label{display:block;margin:.6rem 0 .2rem}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{margin-top:.8rem;padding:.5rem 1rem;font-size:1rem}
.notice{padding:.6rem;border-radius:4px;background:#e7f5e7;border:1px solid #9c9}
.error{padding:.6rem;border-radius:4px;background:#fbeaea;border:1px solid #d99}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dd{margin:0;word-break:break-all}
small{color:#555}
";

/// A message shown above the page's content.
pub enum Notice {
    Done(String),
    Problem(String),
}

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · msngate" }
                style { (STYLE) }
            }
            body { (body) }
        }
    }
}

fn notice(notice: Option<&Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Done(text)) => p.notice role="status" { (text) },
            Some(Notice::Problem(text)) => p.error role="alert" { (text) },
            None => {},
        }
    }
}

fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

pub fn sign_in(csrf: &str, message: Option<&Notice>) -> Markup {
    page(
        "Sign in",
        html! {
            h1 { "msngate" }
            p { "Sign in with your MSN handle and the password you use in MSN Messenger." }
            (notice(message))
            form method="post" action="/sign-in" {
                (csrf_field(csrf))
                label for="handle" { "Handle" }
                input type="text" id="handle" name="handle" autocomplete="username" required;
                label for="password" { "Password" }
                input type="password" id="password" name="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// What the account page shows.
pub struct AccountView {
    pub handle: String,
    pub name: String,
    /// `None` for a local account; else the backend's name and the account there.
    pub link: Option<(String, String)>,
    /// The backend connection's state while the user is logged in with MSN.
    pub online: Option<&'static str>,
    /// The backend refused the linked credentials at the last logon.
    pub refused: bool,
    /// The networks this server can link to: name, help, arguments.
    pub networks: Vec<(String, String, Vec<LinkArg>)>,
}

fn link_form(csrf: &str, (name, help, args): &(String, String, Vec<LinkArg>)) -> Markup {
    html! {
        h2 { "Link an account on " (name) }
        p { small { (help) } }
        form method="post" action={ "/link/" (name) } {
            (csrf_field(csrf))
            @for arg in args {
                @let id = format!("{name}-{}", arg.name);
                @match arg.kind {
                    LinkArgKind::Flag => {
                        label for=(id) {
                            input type="checkbox" id=(id) name=(arg.name) value="true";
                            " " (arg.help)
                        }
                    }
                    kind => {
                        label for=(id) {
                            (arg.name)
                            @if kind == LinkArgKind::Optional { " (optional)" }
                            br; small { (arg.help) }
                        }
                        @if arg.secret {
                            input type="password" id=(id) name=(arg.name) autocomplete="off"
                                required[kind == LinkArgKind::Required];
                        } @else {
                            input type="text" id=(id) name=(arg.name)
                                required[kind == LinkArgKind::Required];
                        }
                    }
                }
            }
            button type="submit" { "Link " (name) " account" }
        }
    }
}

pub fn account(view: &AccountView, csrf: &str, message: Option<&Notice>) -> Markup {
    page(
        "Your account",
        html! {
            h1 { "Your msngate account" }
            (notice(message))
            dl {
                dt { "Handle" } dd { (view.handle) }
                dt { "Friendly name" } dd { (view.name) }
                dt { "Backend" }
                dd {
                    @match &view.link {
                        Some((backend, account)) => { (backend) ": " (account) },
                        None => "local (contacts on this server)",
                    }
                }
                dt { "Connection" }
                dd {
                    @match view.online {
                        Some(state) => { "online with MSN; backend " (state.replace('_', " ")) },
                        None => "not signed in with MSN",
                    }
                }
            }
            @if view.refused {
                p.error { "The other network refused the linked password at the last sign-in: link the account again." }
            }
            @if view.link.is_some() {
                form method="post" action="/unlink" {
                    (csrf_field(csrf))
                    button type="submit" { "Unlink (make this a local account again)" }
                }
            }
            p { small { "A new link or unlink takes effect at your next MSN sign-in." } }
            @for network in &view.networks {
                (link_form(csrf, network))
            }
            h2 { "Change your MSN password" }
            form method="post" action="/password" {
                (csrf_field(csrf))
                label for="current" { "Current password" }
                input type="password" id="current" name="current" autocomplete="current-password" required;
                label for="new-password" { "New password" }
                input type="password" id="new-password" name="password" autocomplete="new-password" required;
                button type="submit" { "Change password" }
            }
            h2 { "Sign out" }
            form method="post" action="/sign-out" {
                (csrf_field(csrf))
                button type="submit" { "Sign out" }
            }
        },
    )
}

pub fn forbidden() -> Markup {
    page(
        "Refused",
        html! {
            h1 { "Refused" }
            p { "This form was not sent from this site's page, or the page is too old. Nothing was changed." }
            p { a href="/" { "Back to the page" } }
        },
    )
}
