use super::*;

fn parse(text: &str) -> Result<Vec<Declared>, String> {
    let file: BackupFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.validate()
}

fn password_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "hunter2\n").expect("write");
    file
}

#[test]
fn a_full_configuration() {
    let pass = password_file();
    let text = format!(
        "[[restic]]\nname = \"home\"\nrepository = \"sftp:backup@nas:/srv/restic\"\npassword_file = {:?}\nhost = \"laptop42\"\ntags = [\"daily\"]\ncheck_read_data_subset = \"2%\"\n\n[[borg]]\nrepository = \"/srv/borg\"\n\n[[systemd_unit]]\nunit = \"veeamjob.service\"\n",
        pass.path()
    );
    let declared = parse(&text).expect("valid");
    assert_eq!(declared.len(), 3);
    let Declared::Restic(restic) = &declared[0] else {
        panic!("{declared:?}");
    };
    assert_eq!(restic.repository.name, "home");
    assert_eq!(restic.repository.check_interval_secs, Some(7 * 86_400));
    assert_eq!(restic.repository.restore_test_files, 3);
    let Declared::Borg(borg) = &declared[1] else {
        panic!("{declared:?}");
    };
    assert_eq!(borg.repository.name, "/srv/borg");
    assert_eq!(borg.passphrase_file, None);
    assert_eq!(declared[2].name(), "veeamjob.service");
}

#[test]
fn bad_sources_name_their_key() {
    let pass = password_file();
    let cases = [
        ("[[restic]]\nrepository = \"/r\"\n".to_owned(), "backup.restic[0].password_file is missing"),
        (
            "[[restic]]\nrepository = \"/r\"\npassword_file = \"/nonexistent/evident.pass\"\n".to_owned(),
            "backup.restic[0].password_file: /nonexistent/evident.pass cannot be read",
        ),
        (format!("[[restic]]\npassword_file = {:?}\n", pass.path()), "backup.restic[0].repository is missing"),
        (
            format!("[[restic]]\nrepository = \"/r\"\npassword_file = {:?}\ncheck_interval_secs = 60\n", pass.path()),
            "backup.restic[0].check_interval_secs is 60",
        ),
        (
            format!("[[restic]]\nrepository = \"/r\"\npassword_file = {:?}\ncheck_read_data_subset = \"lots\"\n", pass.path()),
            "check_read_data_subset \"lots\"",
        ),
        (
            format!("[[borg]]\nrepository = \"/r\"\npassword_file = {:?}\n", pass.path()),
            "backup.borg[0].password_file: borg takes passphrase_file",
        ),
        ("[[borg]]\nrepository = \"--rsh=evil\"\n".to_owned(), "looks like an option"),
        ("[[systemd_unit]]\nname = \"x\"\n".to_owned(), "backup.systemd_unit[0].unit is missing"),
        (
            "[[borg]]\nrepository = \"/a\"\nname = \"n\"\n[[borg]]\nrepository = \"/b\"\nname = \"n\"\n".to_owned(),
            "two borg sources are named \"n\"",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(&text).expect_err(&text);
        assert!(error.contains(expected), "{text}\n-> {error}");
    }
    let unknown = parse("[[restic]]\nrepositry = \"/r\"\n").expect_err("typo");
    assert!(unknown.contains("repositry"), "{unknown}");
}

#[test]
fn secrets_in_locations_are_redacted() {
    use crate::checks::backup::redact_location;
    assert_eq!(
        redact_location("rest:https://backup:s3cr3t@nas.example:8000/laptop42"),
        "rest:https://backup@nas.example:8000/laptop42"
    );
    assert_eq!(
        redact_location("s3:https://AKIAEXAMPLE:wJalrXUtnFEMI@s3.example.com/bucket"),
        "s3:https://AKIAEXAMPLE@s3.example.com/bucket"
    );
    assert_eq!(
        redact_location("azure:container:/path?sig=abc"),
        "azure:container:/path"
    );
    assert_eq!(
        redact_location("sftp:backup@nas:/srv/restic"),
        "sftp:backup@nas:/srv/restic"
    );
    assert_eq!(redact_location("/srv/restic"), "/srv/restic");
    assert_eq!(
        redact_location("ssh://user@host:22/./repo"),
        "ssh://user@host:22/./repo"
    );
}
