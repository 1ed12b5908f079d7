-- Scenario 1 seed data: a few institutes, users (some inactive, one without email) and memberships.
INSERT INTO institutes (name, "imageUrl")
SELECT 'Institute ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'https://img.example/' || g || '.png' END
  FROM generate_series(1, 20) g;
INSERT INTO users (email, first_name, last_name, is_active)
SELECT CASE WHEN g % 50 = 0 THEN NULL ELSE 'user' || g || '@laas.example' END, 'First' || g, 'Last' || g, g % 10 <> 0
  FROM generate_series(1, 500) g;
INSERT INTO institute_user (institute_id, user_id, user_type, status)
SELECT 1 + (g % 20), g,
       (ARRAY['STUDENT', 'TEACHER', 'INSTRUCTOR', 'ADMIN', 'GUEST'])[1 + g % 5]::user_type,
       CASE WHEN g % 7 = 0 THEN 'SUSPENDED' ELSE 'ACTIVE' END
  FROM generate_series(1, 500) g;
