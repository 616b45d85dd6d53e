-- t-site-contact.sql — site_contact (sql/025) holds addresses and *@domain patterns with their domain; a row whose contact_domain is not the contact's domain is refused
INSERT INTO site_contact (contact, contact_domain) VALUES
    ('notify@airline.example', 'airline.example'),
    ('*@bank.example', 'bank.example');
SELECT assert_eq((SELECT count(*) FROM site_contact), 2::bigint, 'two site-wide contacts');
DO $$
BEGIN
    BEGIN
        INSERT INTO site_contact (contact, contact_domain) VALUES ('x@a.example', 'b.example');
        RAISE EXCEPTION 'a wrong contact_domain was stored';
    EXCEPTION WHEN check_violation THEN
        NULL;
    END;
    BEGIN
        INSERT INTO site_contact (contact, contact_domain) VALUES ('nodomain', '');
        RAISE EXCEPTION 'a contact without a domain was stored';
    EXCEPTION WHEN check_violation THEN
        NULL;
    END;
END $$;
SELECT assert_eq((SELECT count(*) FROM site_contact), 2::bigint, 'nothing else stored');
