//! S3's XML answers, read to the two levels that matter, and S3's percent-encoding.

use std::collections::HashMap;
use std::fmt;

use super::client::Reply;
use crate::storage::Error;

pub(super) fn parse_reply(
    op: &'static str,
    bucket: &str,
    r: &Reply,
    root: &str,
) -> Result<XmlDoc, Error> {
    let doc = parse_xml(&r.body).map_err(|detail| Error::S3Payload {
        op,
        bucket: bucket.to_owned(),
        detail,
    })?;
    if doc.root != root {
        return Err(Error::S3Payload {
            op,
            bucket: bucket.to_owned(),
            detail: format!("expected <{root}>, got <{}>", doc.root),
        });
    }
    Ok(doc)
}

/// The two levels of an S3 XML answer that matter: the root's text children (`IsTruncated`,
/// `NextKeyMarker`) and its element children with their text children (`Contents/Key`).
#[derive(Debug, Default)]
pub(super) struct XmlDoc {
    pub(super) root: String,
    fields: HashMap<String, String>,
    pub(super) records: Vec<(String, HashMap<String, String>)>,
}

impl XmlDoc {
    pub(super) fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        self.field(name).is_some_and(|v| v.trim() == "true")
    }

    pub(super) fn records<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a HashMap<String, String>> + 'a {
        self.records
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, r)| r)
    }
}

pub(super) fn parse_xml(bytes: &[u8]) -> Result<XmlDoc, String> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut doc = XmlDoc::default();
    let mut stack: Vec<String> = Vec::new();
    let mut value = String::new();
    let bad = |e: &dyn fmt::Display| format!("not XML: {e}");
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match stack.len() {
                    0 => doc.root = name.clone(),
                    1 => doc.records.push((name.clone(), HashMap::new())),
                    _ => {}
                }
                stack.push(name);
                value.clear();
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match stack.len() {
                    0 => doc.root = name,
                    1 => {
                        doc.fields.insert(name.clone(), String::new());
                        doc.records.push((name, HashMap::new()));
                    }
                    2 => {
                        if let Some((_, rec)) = doc.records.last_mut() {
                            rec.insert(name, String::new());
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => value.push_str(&t.decode().map_err(|e| bad(&e))?),
            Event::CData(c) => value.push_str(&String::from_utf8_lossy(&c)),
            Event::GeneralRef(r) => match r.resolve_char_ref().map_err(|e| bad(&e))? {
                Some(ch) => value.push(ch),
                None => match r.decode().map_err(|e| bad(&e))?.as_ref() {
                    "amp" => value.push('&'),
                    "lt" => value.push('<'),
                    "gt" => value.push('>'),
                    "quot" => value.push('"'),
                    "apos" => value.push('\''),
                    other => return Err(format!("unknown entity &{other};")),
                },
            },
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                match stack.len() {
                    1 => {
                        doc.fields.insert(name, std::mem::take(&mut value));
                    }
                    2 => {
                        if let Some((_, rec)) = doc.records.last_mut() {
                            rec.insert(name, std::mem::take(&mut value));
                        }
                    }
                    _ => {}
                }
                value.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if doc.root.is_empty() {
        return Err("empty document".into());
    }
    Ok(doc)
}

/// `%XX` sequences decoded; anything else kept as is.
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_answers_parse_with_namespaces_and_entities() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><IsTruncated>true</IsTruncated>
  <NextContinuationToken>tok&amp;1</NextContinuationToken>
  <Contents><Key>a &lt;b&gt; &#233;.txt</Key><Size>12</Size>
    <Owner><ID>x</ID></Owner></Contents>
  <Contents><Key><![CDATA[c&d]]></Key><Size>3</Size></Contents>
  <EncodingType/>
</ListBucketResult>"#;
        let doc = parse_xml(body).unwrap();
        assert_eq!(doc.root, "ListBucketResult");
        assert!(doc.flag("IsTruncated"));
        assert_eq!(doc.field("NextContinuationToken"), Some("tok&1"));
        let keys: Vec<_> = doc
            .records("Contents")
            .map(|r| (r["Key"].clone(), r["Size"].clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("a <b> é.txt".to_string(), "12".to_string()),
                ("c&d".to_string(), "3".to_string())
            ]
        );
        assert_eq!(percent_decode("a%20b%2Bc%zz%4"), "a b+c%zz%4");
        assert!(parse_xml(b"").is_err());
        assert!(parse_xml(b"<a><b></a>").is_err());
    }
}
