-- Scenario 1, target side: the organizations service's database. Users are matched by email:
-- their ids differ between the two products.
CREATE SCHEMA organizations;

CREATE TABLE organizations.institute (
  institute_id bigint PRIMARY KEY,
  name         text NOT NULL,
  image_url    text,
  updated_at   timestamptz NOT NULL
);

CREATE TABLE organizations."user" (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email       text NOT NULL UNIQUE,
  name        text NOT NULL,
  updated_at  timestamptz NOT NULL
);

CREATE TABLE organizations.institute_users (
  institute_id bigint NOT NULL REFERENCES organizations.institute (institute_id),
  user_id      bigint NOT NULL,
  role         text NOT NULL CHECK (role IN ('FACULTY', 'ADMIN', 'STUDENT')),
  is_active    boolean NOT NULL,
  PRIMARY KEY (institute_id, user_id)
);
