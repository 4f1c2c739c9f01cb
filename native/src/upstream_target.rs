//! The request target an `http_proxy` integration sends upstream: its URI template's path with
//! the route's path parameters put in, the client's query string appended, and the bytes no
//! request line may carry (controls, space, DEL) percent-encoded.
//!
//! `pygw/integrations/http_proxy.py` keeps the same rendering in Python for the requests this
//! one does not take (a stage's path or query override, text that is not valid UTF-8), and a
//! hypothesis test holds the two to the same output.

/// A URI template's path, split at its `{name}` placeholders.
#[derive(Debug, Clone)]
pub struct TargetTemplate {
    /// The text around the placeholders: one more than there are names.
    literals: Vec<String>,
    names: Vec<String>,
    /// The template ends with a placeholder: a request path's trailing slash is kept.
    param_tail: bool,
    /// The template has a query of its own: the client's is appended with `&`.
    template_query: bool,
}

/// A placeholder named a path parameter the request does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingParameter(pub String);

impl TargetTemplate {
    /// `literals` must be one longer than `names` (None otherwise). No literals at all means
    /// the route has no template: the request's own path is sent. `param_tail`: the template
    /// ends with a placeholder; `template_query`: it has a query of its own.
    pub fn new(
        literals: Vec<String>,
        names: Vec<String>,
        param_tail: bool,
        template_query: bool,
    ) -> Option<Self> {
        if !literals.is_empty() && literals.len() != names.len() + 1 {
            return None;
        }
        Some(Self {
            literals,
            names,
            param_tail,
            template_query,
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The target for a request whose path (below the stage) is `path` and whose raw target is
    /// `raw_target`; `param` gives a path parameter's value by name.
    pub fn render<'a>(
        &self,
        param: impl Fn(usize) -> Option<&'a str>,
        path: &str,
        raw_target: &str,
    ) -> Result<Vec<u8>, MissingParameter> {
        let mut out = String::with_capacity(path.len() + raw_target.len() + 16);
        match self.literals.first() {
            None => out.push_str(path),
            Some(first) => {
                out.push_str(first);
                for (index, (name, literal)) in
                    self.names.iter().zip(&self.literals[1..]).enumerate()
                {
                    let value = param(index).ok_or_else(|| MissingParameter(name.clone()))?;
                    out.push_str(value);
                    out.push_str(literal);
                }
                if self.param_tail && path.ends_with('/') && !out.ends_with('/') {
                    out.push('/');
                }
            }
        }
        if let Some((_, query)) = raw_target.split_once('?') {
            if !query.is_empty() {
                out.push(if self.template_query { '&' } else { '?' });
                out.push_str(query);
            }
        }
        Ok(escape_unsafe(out.into_bytes()))
    }
}

/// `target` with every control byte, space and DEL written as `%XX`.
pub fn escape_unsafe(target: Vec<u8>) -> Vec<u8> {
    let unsafe_byte = |b: u8| b <= 0x20 || b == 0x7f;
    if !target.iter().any(|&b| unsafe_byte(b)) {
        return target;
    }
    let mut out = Vec::with_capacity(target.len() + 16);
    for b in target {
        if unsafe_byte(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(literals: &[&str], names: &[&str], query: bool) -> TargetTemplate {
        let tail = !names.is_empty() && literals.last() == Some(&"");
        TargetTemplate::new(
            literals.iter().map(|s| s.to_string()).collect(),
            names.iter().map(|s| s.to_string()).collect(),
            tail,
            query,
        )
        .expect("balanced")
    }

    #[test]
    fn parameters_fill_the_placeholders_and_the_query_follows() {
        let proxy = template(&["/", ""], &["proxy"], false);
        let got = proxy.render(|_| Some("items/42"), "/items/42", "/items/42?a=1");
        assert_eq!(got, Ok(b"/items/42?a=1".to_vec()));
        let with_query = template(&["/find?x=1&id=", ""], &["id"], true);
        let got = with_query.render(|_| Some("7"), "/p/7", "/p/7?b=2");
        assert_eq!(got, Ok(b"/find?x=1&id=7&b=2".to_vec()));
    }

    #[test]
    fn a_trailing_slash_is_kept_only_after_a_final_placeholder() {
        let tail = template(&["/a/", ""], &["rest"], false);
        assert_eq!(
            tail.render(|_| Some("x"), "/x/", "/x/"),
            Ok(b"/a/x/".to_vec())
        );
        let fixed = template(&["/a/", "/b"], &["id"], false);
        assert_eq!(
            fixed.render(|_| Some("x"), "/x/", "/x/"),
            Ok(b"/a/x/b".to_vec())
        );
    }

    #[test]
    fn no_template_sends_the_path_and_a_missing_parameter_is_named() {
        let none = template(&[], &[], false);
        assert_eq!(
            none.render(|_| None, "/p q", "/p q?"),
            Ok(b"/p%20q".to_vec())
        );
        let needs = template(&["/", ""], &["id"], false);
        assert_eq!(
            needs.render(|_| None, "/", "/"),
            Err(MissingParameter("id".to_string()))
        );
        assert!(TargetTemplate::new(vec!["/".into()], vec!["id".into()], true, false).is_none());
    }

    #[test]
    fn controls_space_and_del_are_escaped() {
        assert_eq!(
            escape_unsafe(b"/a b\x7f\x00".to_vec()),
            b"/a%20b%7F%00".to_vec()
        );
        assert_eq!(escape_unsafe(b"/plain".to_vec()), b"/plain".to_vec());
    }
}
