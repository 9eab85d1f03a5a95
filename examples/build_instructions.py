#!/usr/bin/env python3
"""Build the instruction-tuning datasets for the synthetic Helix Windworks domain.

Deterministic: no randomness. Run from anywhere:

    python3 examples/build_instructions.py

Writes examples/instructions.jsonl (300 chat rows) and
examples/instructions_alpaca.jsonl (40 alpaca rows). Every fact carries a
`key` string that must appear literally in its source document; the script
refuses to write anything if a key is missing. Every chat row records its
source document (path relative to examples/) in a top-level "source" field, so
RAFT-style training data (python -m training raft-data) can put the gold chunk
into, or keep it out of, the retrieved context.
"""
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "You are Helix Windworks' support assistant."
N_CHAT = 300
N_ALPACA = 40

D = {
    "h7op": "docs/manuals/hw7-operator-manual.md",
    "h9op": "docs/manuals/hw9-operator-manual.md",
    "h9gb": "docs/manuals/hw9-gearbox-service-manual.md",
    "pitch": "docs/manuals/hw7-pitch-system-manual.md",
    "scada": "docs/manuals/scada-controller-guide.md",
    "yaw": "docs/manuals/hw9-yaw-system-manual.txt",
    "parts": "docs/manuals/spare-parts-catalogue.md",
    "h7ts": "docs/manuals/hw7-troubleshooting-guide.md",
    "h9ts": "docs/manuals/hw9-troubleshooting-guide.md",
    "conv": "docs/manuals/converter-cabinet-reference.html",
    "blade": "docs/procedures/blade-inspection-procedure.md",
    "mbl": "docs/procedures/main-bearing-lubrication.md",
    "bolt": "docs/procedures/tower-bolt-torque-procedure.md",
    "loto": "docs/procedures/lockout-tagout-procedure.md",
    "goc": "docs/procedures/gearbox-oil-change.md",
    "site": "docs/procedures/site-inspection-checklist.md",
    "winter": "docs/procedures/winter-operations-procedure.txt",
    "lps": "docs/procedures/lightning-protection-check.md",
    "rescue": "docs/procedures/rescue-from-nacelle-procedure.md",
    "brake": "docs/procedures/brake-pad-replacement.html",
    "wah": "docs/policies/working-at-height-policy.md",
    "travel": "docs/policies/travel-expense-policy.md",
    "it": "docs/policies/it-security-policy.md",
    "war": "docs/policies/warranty-policy.md",
    "onb": "docs/policies/onboarding-guide.md",
    "leave": "docs/policies/hr-leave-policy.txt",
    "oncall": "docs/policies/on-call-policy.txt",
    "ppe": "docs/policies/ppe-policy.md",
    "inc": "docs/policies/incident-reporting-policy.html",
    "fleet": "docs/policies/vehicle-fleet-policy.md",
}

# Paraphrases of the qa.jsonl evaluation questions: id -> (answer, [questions]).
# Same fact as the eval question, different wording.
QA_PARA = {
    "q01": ("The HW-7 cuts out at 25 m/s (10-minute average) and restarts automatically when the average drops below 21 m/s.",
            ["Above what wind speed does an HW-7 shut down?", "At which wind speed does the HW-7 stop producing because it is too windy?"]),
    "q02": ("The HW-7 service lift has a rated load of 240 kg, which is two persons plus tools.",
            ["What's the load limit of the lift in an HW-7 tower?", "How many kilos can go in the HW-7 service lift?"]),
    "q03": ("The HW-9 nacelle service crane has a safe working load of 800 kg.",
            ["What is the SWL of the crane inside an HW-9 nacelle?", "How heavy a part can I lift with the HW-9's internal crane?"]),
    "q04": ("The HW-9 service password rotates every 30 days and is issued by the Operations Desk.",
            ["How frequently is the HW-9 alarm acknowledgement password rotated?", "For how long is an HW-9 service password valid?"]),
    "q05": ("The GBX-920 gearbox of the HW-9 holds 980 litres of oil, including the external cooler circuit.",
            ["How many litres of gear oil are in an HW-9 GBX-920 gearbox?", "What volume of oil do I need to fill an HW-9 gearbox?"]),
    "q06": ("At the alarm level of 7.1 mm/s RMS on the high-speed shaft bearing, the HW-9 must be derated to 50 % power until inspected.",
            ["What is the CMS-4 alarm level for HW-9 high-speed shaft bearing vibration?", "When does gearbox vibration force an HW-9 down to half power?"]),
    "q07": ("Replace the HW-7 pitch ultracapacitor bank if the capacitance has fallen below 80 % of the nameplate value.",
            ["What capacitance limit is used to decide on replacing HW-7 pitch ultracaps?", "How do I know when the HW-7 pitch backup ultracapacitors are worn out?"]),
    "q08": ("The M30 pitch bearing bolts on the HW-7 are tightened to 1,450 Nm, at commissioning, after 500 operating hours, and for the annual 10 % check.",
            ["What's the tightening torque for the M30 bolts on the HW-7 pitch bearing?", "To what value should I torque HW-7 pitch bearing bolts?"]),
    "q09": ("A faulted turbine may be reset remotely at most 2 times in 24 hours; after that a technician must inspect it on site.",
            ["What is the limit on remote resets in HelixView?", "How often can I reset a faulted turbine from HelixView before someone has to go on site?"]),
    "q10": ("HelixView accounts that have not logged in for 90 days are disabled automatically.",
            ["When does an unused HelixView account get disabled?", "How long can a HelixView account stay inactive before it is switched off?"]),
    "q11": ("New HW-9 yaw slide pads are 12 mm thick; replace any pad that has worn below 7 mm.",
            ["What is the wear limit for yaw slide pads on the HW-9?", "When do HW-9 yaw pads have to be changed?"]),
    "q12": ("Each of the eight HW-9 yaw drive gearboxes holds 11 litres of VG 220 oil.",
            ["What is the oil capacity of one HW-9 yaw gearbox?", "How many litres of VG 220 oil per yaw drive on the HW-9?"]),
    "q13": ("Express delivery (1 working day) carries a surcharge of EUR 85 per order.",
            ["What does express shipping of spare parts cost extra?", "Is there a surcharge for next-day parts delivery, and how much?"]),
    "q14": ("HX-HB-7001 was replaced by HX-HB-7002. They are interchangeable, but the new unit needs adapter kit HX-AK-72.",
            ["What is the successor of the HW-7 brake unit HX-HB-7001?", "HX-HB-7001 is no longer available. What should I order instead?"]),
    "q15": ("HW-7 fault 318 means gearbox oil pressure low (below 0.8 bar). Check the pump motor and the inline filter HX-FLT-7101.",
            ["What is HW-7 fault code 318?", "The HW-7 display shows 318. What is wrong?"]),
    "q16": ("If a fault repeats three times within 7 days, open a ticket with Technical Support at extension 4455 instead of resetting again.",
            ["Who do I contact if an HW-7 fault repeats three times in a week?", "What is the Technical Support extension for HW-7 faults?"]),
    "q17": ("On the HW-9, the overspeed alarm E9-915 triggers at 12.6 rpm.",
            ["What rpm sets off E9-915 on an HW-9?", "What is the HW-9 overspeed limit?"]),
    "q18": ("Firmware 4.2.1 of HelixCore 4 can raise false E9-122 alarms below -10 °C. Upgrade to firmware 4.2.3 or later.",
            ["We get E9-122 blade load alarms when it's very cold. Is there a fix?", "Which HelixCore 4 version should I install to stop spurious E9-122 alarms?"]),
    "q19": ("Wait at least 15 minutes for the DC-link capacitors to discharge, then verify the DC-link voltage is below 50 V DC.",
            ["How long does the HW-9 converter DC link need to discharge?", "What waiting time applies before touching anything in the PCX-6000 cabinet?"]),
    "q20": ("M12 busbar bolts in the HW-9 converter cabinet are tightened to 70 Nm.",
            ["What is the busbar bolt torque in the PCX-6000 converter?", "To what torque do I check the M12 busbar connections in the converter?"]),
    "q21": ("Fly the drone at a distance of 8 to 12 m from the blade surface.",
            ["What distance should the inspection drone keep from the blades?", "How close should I fly to a blade when photographing it?"]),
    "q22": ("Category 4 (structural) damage must be repaired within 1 month, and derating should be considered.",
            ["What is the repair deadline for structural blade damage?", "A blade has category 4 damage. How long do we have to fix it?"]),
    "q23": ("Each HW-7 main bearing regreasing uses 1.8 kg of MB-460 grease, 600 g per nipple.",
            ["What quantity of MB-460 grease is used per HW-7 main bearing service?", "How many kilos of grease does the HW-7 main bearing need every 6 months?"]),
    "q24": ("The HW-7 warns at 70 °C main bearing temperature and stops at 78 °C (fault code 225).",
            ["What is the trip temperature for the HW-7 main bearing?", "When does main bearing temperature shut an HW-7 down?"]),
    "q25": ("The M48 bolts between the foundation and bottom tower section of an HW-9 are tightened to 5,200 Nm.",
            ["What is the torque for the HW-9 foundation-to-tower bolts?", "How tight should the M48 bolts on the HW-9 bottom flange be?"]),
    "q26": ("Check 100 % of the bolts in a flange if any checked bolt turns by more than 20 degrees.",
            ["When does a sample tower bolt check turn into a full check of the flange?", "What result forces me to check every bolt in a tower flange?"]),
    "q27": ("Supervisors' locks are blue; personal technician locks are red.",
            ["What lock colour do supervisors use for lockout?", "Which colour identifies a supervisor's lock in LOTO?"]),
    "q28": ("The site lead must try to reach the person by phone for at least 60 minutes and document the removal on form LOTO-R3.",
            ["Someone left site with their lock still on. How long must we try to call them first?", "What is the phone-attempt period before a site lead may cut off another person's lock?"]),
    "q29": ("The HW-7 GBX-730 gearbox holds 620 litres including cooler and pipes.",
            ["What is the oil volume of the GBX-730 gearbox?", "How much VG 320 oil does an HW-7 gearbox need?"]),
    "q30": ("The target cleanliness is ISO 4406 code 17/15/12 or better, checked with a sample after 500 operating hours.",
            ["What ISO 4406 code should HW-7 gear oil meet after a change?", "What is the cleanliness target for new oil in the HW-7 gearbox?"]),
    "q31": ("Every wind farm receives a site inspection once per quarter by the site lead or a deputy.",
            ["How frequently are quarterly site inspections done?", "How many times a year is a wind farm inspected with the SIC-4 checklist?"]),
    "q32": ("Cracks in the concrete pedestal must not be wider than 0.3 mm.",
            ["What is the crack width limit for the foundation pedestal?", "During a site inspection, how wide may a crack in the foundation be?"]),
    "q33": ("During icing, nobody may stand within 300 m of an operating turbine. For a stopped turbine the zone is 150 m.",
            ["What is the ice-throw safety distance for a running turbine?", "How big is the exclusion zone around an operating turbine when there's ice?"]),
    "q34": ("Blade heating (option BH-9) uses up to 180 kW per turbine.",
            ["What is the power consumption of the HW-9 blade heating option?", "How many kW does BH-9 blade heating need?"]),
    "q35": ("Foundation earthing resistance must be at most 10 ohms.",
            ["What is the limit for the earthing resistance at the foundation?", "How low must the turbine earthing resistance be?"]),
    "q36": ("Strikes with a peak current above 100 kA are severe and need a rope-access inspection of the blade.",
            ["When is an HW-9 lightning strike classed as severe?", "Which strike current requires a rope-access blade inspection on an HW-9?"]),
    "q37": ("The RD-200 rescue kit has 150 m of rope, enough for both the HW-9 and the HW-7.",
            ["How much rope does the RD-200 descender come with?", "What rope length is in the red rescue bag in the nacelle?"]),
    "q38": ("Replace the pads when the remaining friction material is 5 mm or less. New pads are 20 mm.",
            ["What is the wear limit for HW-7 brake pads?", "When do the rotor brake pads on an HW-7 need changing?"]),
    "q39": ("Tighten the HW-7 brake caliper mounting bolts to 165 Nm.",
            ["What is the caliper bolt torque after replacing HW-7 brake pads?", "How tight do the HW-7 brake caliper bolts go?"]),
    "q40": ("Work on the nacelle roof is allowed up to 12 m/s wind speed.",
            ["What's the wind limit for nacelle roof work?", "Up to which wind speed may I go onto the nacelle roof?"]),
    "q41": ("Private car use is reimbursed at EUR 0.32 per kilometre.",
            ["What is the kilometre allowance for private cars?", "How is business driving in my own car reimbursed?"]),
    "q42": ("The per diem is EUR 42 for a full travel day and EUR 21 for travel days under 8 hours.",
            ["How much per diem do I get for a full day of travel?", "What is the meal allowance when I travel all day?"]),
    "q43": ("Passwords must be at least 14 characters long.",
            ["What is the minimum password length at Helix?", "How many characters does a Helix password need?"]),
    "q44": ("HW-9 rotor blades have a 7-year warranty against structural defects (HW-7 blades: 5 years).",
            ["What is the warranty period for HW-9 blades?", "How many years are HW-9 blades covered for structural defects?"]),
    "q45": ("The target for 2026 is a lost-time injury frequency below 1.5 per million hours worked.",
            ["What is Helix's lost-time injury frequency target for 2026?", "Which LTIF does the company aim for this year (2026)?"]),
    "q46": ("Full-time employees get 28 days of paid annual leave, rising to 30 days after 5 years of service.",
            ["How much holiday do full-timers get per year?", "What is the annual leave entitlement for a full-time employee?"]),
    "q47": ("The on-call allowance is EUR 60 per weekend day or public holiday and EUR 35 per weekday.",
            ["How much is on-call pay for a Saturday or Sunday?", "What do I get for being on standby on a weekend day?"]),
    "q48": ("The speed limit on wind farm access roads is 30 km/h, or 15 km/h within 100 m of a turbine or crane.",
            ["How fast may I drive on a wind farm access road?", "What is the maximum speed for service vans on wind farm roads?"]),
}

# Other facts (not in the eval set): (doc, key literal in doc, answer, [questions]).
FACTS = [
    ("h7op", "3.2 MW", "The HW-7 has a rated power of 3.2 MW and a rotor diameter of 126 m.",
     ["What is the rated power of the HW-7?", "How big is the HW-7 in MW?"]),
    ("h7op", "15.1 rpm", "The HW-7 nominal rotor speed is 12.8 rpm and the overspeed trip is set at 15.1 rpm.",
     ["What is the overspeed trip setting on the HW-7?", "At what rotor speed does an HW-7 trip for overspeed?"]),
    ("h7op", "102.5 dB(A)", "Noise mode N2 limits the HW-7 sound power to 102.5 dB(A) by reducing rotor speed to 11.2 rpm, costing about 6 % of annual energy.",
     ["What does HW-7 noise mode N2 do?", "What sound power limit applies in the HW-7 reduced-noise mode?"]),
    ("h7op", "about 90 seconds", "The HW-7 self-test in PAUSE takes about 90 seconds.",
     ["How long does the HW-7 self-test take after maintenance?"]),
    ("h7op", "flashing green", "A flashing green lamp on the HW-7 tower-base panel means the turbine is waiting for wind.",
     ["What does a flashing green lamp mean on the HW-7 panel?"]),
    ("h9op", "5.6 MW", "The HW-9 is rated at 5.6 MW with a 158 m rotor on a 120 m hub height.",
     ["What is the rated power of the HW-9?", "How large is the HW-9 rotor?"]),
    ("h9op", "6.5 rpm", "The HW-9 connects to the grid at a rotor speed of 6.5 rpm.",
     ["At what rotor speed does the HW-9 connect to the grid?"]),
    ("h9op", "HX-CR2", "Only technicians holding the Helix crane card (course code HX-CR2) may operate the HW-9 nacelle crane.",
     ["Which course do I need to operate the HW-9 nacelle crane?"]),
    ("h9op", "extension 4475", "For offshore HW-9 units, call the Marine Coordination Centre at extension 4475.",
     ["Who do I call about an offshore HW-9?", "What is the Marine Coordination Centre's extension?"]),
    ("h9op", "1.5 km", "Helicopter hoisting to the HW-9 platform is only permitted with wind below 20 m/s and visibility above 1.5 km; the platform takes 600 kg.",
     ["What are the weather limits for helicopter hoisting onto an HW-9?"]),
    ("h9gb", "1:38.6", "The HW-9 GBX-920 gearbox has a gear ratio of 1:38.6.",
     ["What is the gear ratio of the HW-9 gearbox?"]),
    ("h9gb", "500 ppm", "The HW-9 gearbox oil is changed every 5 years or when water content exceeds 500 ppm, whichever comes first.",
     ["How often is the HW-9 gearbox oil changed?", "What water content in the oil forces an HW-9 oil change?"]),
    ("h9gb", "2,850 Nm", "The M48 gearbox torque-arm bolts on the HW-9 are tightened to 2,850 Nm.",
     ["What torque for the HW-9 gearbox torque-arm bolts?"]),
    ("h9gb", "every 3 years", "A borescope inspection of the HW-9 planetary stages is done every 3 years through port B2.",
     ["How often is the HW-9 gearbox borescoped?"]),
    ("h9gb", "extension 4532", "Drivetrain Engineering can be reached at extension 4532.",
     ["What is the Drivetrain Engineering extension?"]),
    ("pitch", "HX-GR-EP2", "HW-7 pitch bearings use Helix PitchGrease EP2 (part number HX-GR-EP2); the 4 kg reservoir lasts about 12 months.",
     ["Which grease goes into the HW-7 pitch lubrication unit?", "What is the part number of the HW-7 pitch bearing grease?"]),
    ("pitch", "9 degrees per second", "The HW-7 emergency pitch rate is 9 degrees per second; the normal maximum is 7 degrees per second.",
     ["How fast does the HW-7 pitch in an emergency?"]),
    ("pitch", "P-117", "P-117 means ultracapacitor voltage low. Check the charger fuse F7 in the pitch cabinet.",
     ["What does pitch fault P-117 mean on the HW-7?"]),
    ("scada", "20 minutes of inactivity", "HelixView sessions time out after 20 minutes of inactivity.",
     ["When does a HelixView session time out?"]),
    ("scada", "100 kW", "The minimum manual curtailment step in HelixView is 100 kW per turbine.",
     ["What is the smallest curtailment step a Supervisor can enter?"]),
    ("scada", "extension 4620", "HelixView support is the SCADA support team at extension 4620, available 24/7.",
     ["Who supports HelixView and how do I reach them?"]),
    ("scada", "7 days", "The maximum export range for 1-second data in HelixView is 7 days; use 10-minute data for longer periods.",
     ["How much 1-second data can I export from HelixView at once?"]),
    ("yaw", "0.3 degrees per second", "The HW-9 yaw speed is 0.3 degrees per second.",
     ["How fast does the HW-9 nacelle yaw?"]),
    ("yaw", "E9-318", "E9-318 means yaw brake pressure below 140 bar.",
     ["What does alarm E9-318 mean?"]),
    ("yaw", "780 Nm", "HW-9 yaw drive mounting bolts (M24) are tightened to 780 Nm.",
     ["What torque for the HW-9 yaw drive mounting bolts?"]),
    ("yaw", "1,080 degrees", "After 3 full turns (1,080 degrees) in one direction, the HW-9 stops and untwists its cables automatically.",
     ["When does the HW-9 untwist its cables?"]),
    ("parts", "14:00 CET", "Orders placed before 14:00 CET on a working day ship the same day from Brennholt.",
     ["What is the cut-off time for same-day shipping of spare parts?"]),
    ("parts", "15 %", "Unused parts can be returned within 60 days in original packaging, with a 15 % restocking fee.",
     ["Can I return unused spare parts?", "What restocking fee applies to returned parts?"]),
    ("parts", "6,850", "The converter IGBT module HX-IGBT-9M costs EUR 6,850 with a 35-day lead time.",
     ["What does an HW-9 IGBT module cost?"]),
    ("parts", "extension 4700", "Call the Parts Desk at extension 4700 or use the Helix Parts Portal.",
     ["How do I order spare parts by phone?"]),
    ("h7ts", "155 °C", "HW-7 fault 205 is generator winding over-temperature, above 155 °C. Check the cooling fan and air filter mats.",
     ["What does HW-7 fault 205 mean?"]),
    ("h7ts", "X31", "For HW-7 fault 431 (wind vane signal lost), check connector X31 in the top box.",
     ["How do I troubleshoot HW-7 fault 431?"]),
    ("h7ts", "60 g", "The HW-7 generator bearing takes 60 g of grease every 2,500 hours.",
     ["How much grease does the HW-7 generator bearing need?"]),
    ("h9ts", "10 megaohms", "If generator insulation resistance (E9-522) is below 10 megaohms, dry the generator with the standstill heaters for 24 hours.",
     ["What do I do about E9-522 on an HW-9?"]),
    ("h9ts", "within 2 hours", "E9-745 aviation light failure must be reported to the aviation authority within 2 hours; call the Operations Desk immediately.",
     ["An HW-9 shows E9-745. What do I have to do?"]),
    ("h9ts", "extension 4466", "If the same alarm appears more than twice within 48 hours, escalate to HW-9 Technical Support at extension 4466.",
     ["When and where do I escalate a repeating HW-9 alarm?"]),
    ("h9ts", "75 °C", "E9-231 main bearing temperature high triggers at 75 °C on the HW-9.",
     ["At what temperature does E9-231 trigger?"]),
    ("conv", "HV-2", "Only technicians with high-voltage authorisation level HV-2 may open the HW-9 converter cabinet doors.",
     ["Who may open the HW-9 converter cabinet?"]),
    ("conv", "every 4 years", "The HW-9 converter coolant (140 litres of 50/50 water-glycol) is replaced every 4 years.",
     ["How often is the converter coolant changed?"]),
    ("conv", "extension 4541", "Power Electronics Engineering is at extension 4541.",
     ["Who do I call with converter questions?"]),
    ("blade", "DL-2", "Drone pilots must hold the Helix drone licence DL-2.",
     ["Which licence does a blade inspection drone pilot need?"]),
    ("blade", "within 48 hours", "Blade inspection images are uploaded to BladeVault within 48 hours.",
     ["When must drone blade images be uploaded?"]),
    ("blade", "8 mm", "Each blade tip drain hole has a diameter of 8 mm and must be confirmed open.",
     ["How big is the blade tip drain hole?"]),
    ("mbl", "HX-MB-7240", "The HW-7 main bearing is a spherical roller bearing, part number HX-MB-7240.",
     ["What is the part number of the HW-7 main bearing?"]),
    ("mbl", "channel 6", "Inform the site lead by radio on channel 6 that main bearing work has started.",
     ["Which radio channel is used to announce main bearing work?"]),
    ("bolt", "3,600 Nm", "The HW-7 foundation-to-bottom-section bolts (M42) are tightened to 3,600 Nm.",
     ["What torque for the HW-7 foundation flange bolts?"]),
    ("bolt", "TL-5", "Tower bolt check results are recorded in the Torque Log form TL-5.",
     ["Where do I record tower bolt torque results?"]),
    ("bolt", "HX-BP-MOS", "Tower flange bolts are lubricated with Helix BoltPaste MoS2, part number HX-BP-MOS.",
     ["What lubricant is used on tower flange bolts?"]),
    ("loto", "every 2 years", "LOTO training is mandatory before any turbine work and is refreshed every 2 years.",
     ["How often must LOTO training be refreshed?"]),
    ("loto", "more than 3 people", "Group lockout boxes are used when more than 3 people work on the same equipment.",
     ["When do we use a group lockout box?"]),
    ("goc", "8 hours", "An HW-7 gearbox oil change takes about 8 hours for a team of two.",
     ["How long does an HW-7 gearbox oil change take?"]),
    ("goc", "40 °C", "Run the turbine until the gearbox oil is at least 40 °C before draining, because warm oil drains faster.",
     ["How warm should the oil be before draining an HW-7 gearbox?"]),
    ("goc", "WO-2", "Waste oil transfers are documented on form WO-2, signed by the technician and the driver.",
     ["Which form is used for waste oil transfer?"]),
    ("site", "within 10 working days", "A MAJOR finding in a site inspection must be corrected within 10 working days.",
     ["How fast must a MAJOR site inspection finding be fixed?"]),
    ("site", "substation entrance", "The AED is located in the substation entrance.",
     ["Where is the defibrillator on a wind farm?"]),
    ("site", "extension 4390", "The Site Operations team is at extension 4390.",
     ["What is the Site Operations team extension?"]),
    ("winter", "IceSense-2", "Turbines in climate zones C and D have the IceSense-2 ice detector; an ICE STOP restarts after 2 hours without ice or a visual ground check.",
     ["When can a turbine restart after an ice stop?"]),
    ("winter", "20 cm", "Access roads must be cleared when the snow depth exceeds 20 cm.",
     ["At what snow depth must access roads be cleared?"]),
    ("winter", "L-ICE", "Lost production due to ice is recorded in HelixView with loss category L-ICE.",
     ["Which loss category is used for icing losses?"]),
    ("lps", "HX-RC-12", "The lightning receptor part number is HX-RC-12 for both turbine types; tighten it to 25 Nm with thread locker.",
     ["What is the part number of the blade lightning receptor?"]),
    ("lps", "70 milliohms", "The HW-9 down-conductor resistance limit is 70 milliohms (HW-7: 50 milliohms).",
     ["What is the maximum down-conductor resistance on an HW-9 blade?"]),
    ("lps", "within 30 km", "LPS work is not allowed when thunderstorms are forecast within 30 km in the next 6 hours.",
     ["When is lightning protection work not allowed?"]),
    ("rescue", "22 kN", "The yellow-marked rescue anchor point above the roof hatch is rated for 22 kN.",
     ["What is the rating of the nacelle rescue anchor point?"]),
    ("rescue", "extension 4999", "Call 112, then the Helix Emergency Line at extension 4999 (external: +49 4561 77 4999).",
     ["What is the Helix Emergency Line number?"]),
    ("rescue", "0.9 m/s", "The RD-200 limits the lowering speed to about 0.9 m/s.",
     ["How fast does the RD-200 lower a casualty?"]),
    ("brake", "38 mm", "Replace the HW-7 brake disc if it is thinner than 38 mm (new: 40 mm).",
     ["What is the minimum HW-7 brake disc thickness?"]),
    ("brake", "42 kNm", "After bedding in, the HW-7 brake must hold a test torque of 42 kNm on the high-speed shaft.",
     ["What test torque must the HW-7 brake hold after new pads?"]),
    ("wah", "24 months", "A GWO Working at Heights certificate is valid for 24 months.",
     ["How long is a GWO Working at Heights certificate valid?"]),
    ("wah", "3 turbines per working day", "A technician may climb at most 3 turbines per working day by ladder; lift use does not count.",
     ["How many turbines may I climb by ladder in a day?"]),
    ("wah", "radius of 20 m", "An exclusion zone with a radius of 20 m is set up around the tower base during nacelle roof work.",
     ["What exclusion zone applies below nacelle roof work?"]),
    ("wah", "10 years", "Harnesses and lanyards are withdrawn after 10 years from the manufacturing date, or immediately after arresting a fall.",
     ["When must a harness be taken out of service?"]),
    ("travel", "EUR 140", "The hotel limit is EUR 140 per night, or EUR 190 in capital cities and high-cost-list locations.",
     ["What is the maximum hotel rate per night?"]),
    ("travel", "within 30 days", "Expenses are claimed in ExpenseNow within 30 days after the trip ends; receipts are needed above EUR 25.",
     ["When do I have to submit my expense claim?"]),
    ("travel", "EUR 3,000", "Travel costing more than EUR 3,000 in total also needs approval from the Finance Director.",
     ["When does a trip need Finance Director approval?"]),
    ("travel", "6 hours or longer", "Premium economy is allowed for flights of 6 hours or longer; otherwise economy.",
     ["Can I fly premium economy?"]),
    ("it", "within 1 hour", "Report a lost or stolen device to the IT Service Desk within 1 hour, at extension 4300 or via the IT service portal.",
     ["I lost my laptop. What should I do?"]),
    ("it", "locked for 15 minutes", "After 5 failed login attempts the account is locked for 15 minutes.",
     ["What happens after several failed logins?"]),
    ("it", "extension 4333", "Report suspected security incidents to the IT Security team at extension 4333, 24 hours a day.",
     ["How do I report a security incident?"]),
    ("it", "180 days", "Passwords are changed every 180 days, or immediately if compromised.",
     ["How often do I need to change my password?"]),
    ("war", "96.5 %", "The HW-7 availability warranty under a full-service agreement is 96.5 % per calendar year.",
     ["What availability is warranted for the HW-7?"]),
    ("war", "WC-1", "Report defects within 30 days of discovery via the Customer Portal using claim form WC-1.",
     ["How do I file a warranty claim?"]),
    ("war", "200 kA", "Damage from lightning strikes above 200 kA is excluded from the warranty.",
     ["Does the warranty cover lightning damage?"]),
    ("war", "10 years", "Tower paint and corrosion protection is warranted for 10 years.",
     ["How long is the tower paint warranty?"]),
    ("onb", "first 3 months", "Every new employee gets a buddy for the first 3 months.",
     ["How long do new hires have a buddy?"]),
    ("onb", "orange", "Badges are blue for office staff, orange for field technicians and grey for contractors.",
     ["What badge colour do field technicians get?"]),
    ("onb", "5 %", "The company pension has an employer contribution of 5 % of base salary.",
     ["How much does Helix contribute to the pension?"]),
    ("onb", "Aeolus", "The welcome session is held in the Aeolus meeting room from 09:00 to 11:00.",
     ["Where is the welcome session on day one?"]),
    ("leave", "31 March", "Up to 5 unused days may be carried over; they must be used by 31 March.",
     ["Can I carry over unused holiday?"]),
    ("leave", "fourth calendar day", "A doctor's certificate is required from the fourth calendar day of sickness.",
     ["When do I need a doctor's note?"]),
    ("leave", "20 working days", "Helix offers 20 working days of paid parental leave per parent, taken within 12 months.",
     ["How much paid parental leave does Helix give?"]),
    ("oncall", "within 3 hours", "The on-call technician must be on site within 3 hours for a stopped onshore turbine.",
     ["How quickly must the on-call technician reach an onshore site?"]),
    ("oncall", "13 weeks", "No technician may be on call more than 2 weeks in a row or more than 13 weeks per calendar year.",
     ["How many on-call weeks per year are allowed?"]),
    ("oncall", "SatLink-3", "The on-call bag includes a satellite messenger, model SatLink-3.",
     ["Which satellite messenger is in the on-call bag?"]),
    ("ppe", "40 cal/cm", "Electrical work above 1,000 V requires an arc-flash suit rated at least 40 cal/cm², class 2 insulating gloves and a face shield.",
     ["What arc-flash rating is needed for HV work?"]),
    ("ppe", "92 dB(A)", "The noise in the HW-9 nacelle can reach 92 dB(A), so hearing protection is mandatory in a running turbine.",
     ["How loud is the HW-9 nacelle?"]),
    ("ppe", "white", "Visitors' loan helmets are white; technicians wear yellow and first aiders green.",
     ["What helmet colour do visitors wear?"]),
    ("inc", "extension 4888", "Serious incidents must be phoned to the Health and Safety duty officer within 1 hour at extension 4888.",
     ["How do I report a serious incident by phone?"]),
    ("inc", "Open Eyes", "Each quarter the site with the most near-miss reports per employee gets the Open Eyes award.",
     ["What is the Open Eyes award?"]),
    ("inc", "TapRooT", "Level 3 incidents are investigated with the TapRooT root-cause method; levels 1 and 2 use 5 Whys.",
     ["Which method is used for level 3 incident investigations?"]),
    ("fleet", "1,050 kg", "The SV-4 service van has a maximum payload of 1,050 kg.",
     ["What is the payload of an SV-4 van?"]),
    ("fleet", "EUR 250", "For at-fault accidents the driver pays an excess of EUR 250, waived after 3 years without an at-fault accident.",
     ["Do I pay anything if I cause an accident with a company van?"]),
    ("fleet", "DD-4", "Drivers of four-wheel-drive vans must complete the off-road module DD-4 in addition to DD-1.",
     ["Which training do I need to drive a 4x4 service van?"]),
]

# Step-by-step answers: (doc, keys that must all appear, question, answer)
PROCEDURES = [
    ("h7op", ["90 seconds", "9 rpm"], "How do I restart an HW-7 after maintenance?",
     "1. Confirm everyone has left the nacelle and hub and signed out. 2. Remove all personal locks from LOTO station LS-7. 3. Select PAUSE and wait for the self-test (about 90 seconds). 4. Select RUN; the turbine connects to the grid once the rotor reaches 9 rpm."),
    ("h9op", ["45 seconds", "CCP OK"], "What is the HW-9 start-up sequence?",
     "1. Verify yaw brake pressure is 160 to 180 bar. 2. Confirm the converter cooling pump is running (CCP OK). 3. Select STANDBY; the DC link pre-charges in about 45 seconds. 4. Select RUN; grid connection happens at 6.5 rpm."),
    ("loto", ["0 bar", "STOP"], "Walk me through applying lockout/tagout on a turbine.",
     "1. Notify the Operations Desk. 2. Put the turbine in STOP. 3. Engage the rotor lock. 4. Open the main isolator and auxiliary breaker. 5. Attach your lock and tag to each point. 6. Depressurise accumulators to 0 bar. 7. Verify zero energy. 8. Then start work."),
    ("mbl", ["600 g", "30 minutes"], "How do I regrease the HW-7 main bearing?",
     "1. PAUSE (rotor idling). 2. Radio the site lead on channel 6. 3. Open the waste grease drain. 4. Clean nipples A, B, C. 5. Pump 600 g into each, max 100 g per minute. 6. Idle 30 minutes, drain open. 7. Close drain, weigh and inspect waste grease. 8. Set RUN."),
    ("blade", ["six o'clock", "70 %"], "What are the steps of a drone blade inspection?",
     "1. Check ground wind below 10 m/s and no rain. 2. PAUSE and rotate the blade to six o'clock. 3. Engage the rotor lock. 4. Fly 8 to 12 m from the blade. 5. Photograph all four sides root to tip with 70 % overlap. 6. Repeat for the other blades. 7. Upload to BladeVault within 48 hours."),
    ("brake", ["RT-7", "0.5 to 1.0 mm"], "How are HW-7 brake pads replaced?",
     "1. Stop, rotor lock, LOTO, depressurise to 0 bar. 2. Remove the disc guard. 3. Remove retaining pins and retract pistons with RT-7. 4. Remove pads, measure the disc. 5. Clean the caliper. 6. Fit new pads, caliper bolts 165 Nm. 7. Pressurise; air gap 0.5 to 1.0 mm. 8. Refit guard, remove locks, bed in."),
    ("rescue", ["112", "RD-200"], "What do I do if a colleague is unconscious in the nacelle?",
     "Stop the turbine and engage the rotor lock. Call 112 and the Helix Emergency Line (extension 4999). Give first aid and start CPR if not breathing. Fit the rescue triangle, connect the RD-200, anchor it to the yellow rescue point, lower the casualty steadily and hand over to emergency services."),
    ("lps", ["10 A", "LPS-M1"], "How is a blade down-conductor continuity measurement done?",
     "1. STOP, rotor lock and LOTO. 2. Put the blade horizontal. 3. Rope-access technician connects a lead to the tip receptor. 4. Connect the other lead at the blade root terminal. 5. Measure with a four-wire micro-ohmmeter at 10 A or more. 6. Record on form LPS-M1. 7. Repeat for the other blades."),
    ("bolt", ["yellow line", "red dot"], "How do I check tower flange bolts?",
     "1. STOP and rotor lock. 2. Inform the site lead; nobody above the flange. 3. Select every tenth bolt from the red dot. 4. Set pump pressure. 5. Apply torque; the bolt passes if the nut turns less than 20 degrees. 6. Mark with a yellow line. 7. Record on form TL-5."),
    ("goc", ["sump magnet", "10-micron"], "Summarise the HW-7 gearbox oil change steps.",
     "Warm the oil to 40 °C, stop and apply LOTO, drain via the truck (about 90 minutes), inspect gears and sump magnet, flush with 60 litres, replace inline and breather filters, refill through the 10-micron filter, close the cover at 85 Nm, run 1 hour and check for leaks."),
    ("fleet", ["FleetApp", "SafeReport"], "What should I do after an accident with a company vehicle?",
     "1. Make the scene safe and call 112 if anyone is hurt. 2. Take photos and exchange details. 3. Report the accident in the FleetApp within 24 hours. 4. Also report it as an incident in SafeReport."),
    ("war", ["20 working days", "WC-1"], "What are the steps to claim under the turbine warranty?",
     "1. Report the defect within 30 days through the Customer Portal on form WC-1. 2. Include serial number, alarm history and photos. 3. Keep the failed parts. 4. Helix confirms within 2 working days and decides within 20 working days."),
]

# Deterministic templates used only to top up to N_CHAT rows from FACTS.
FILL_TEMPLATES = [
    "Quick question: {q}",
    "According to Helix documentation, {ql}",
    "I'm on site and need to know: {ql}",
    "Can you check for me: {ql}",
]


def norm(text):
    return re.sub(r"\s+", " ", text).lower()


def doc_text(rel):
    t = (HERE / rel).read_text(encoding="utf-8")
    if rel.endswith(".html"):
        t = re.sub(r"<[^>]+>", " ", t).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
    return norm(t)


def lower_first(q):
    return q[0].lower() + q[1:] if q[:2] not in ("HW", "HX", "E9", "P-") and not q.startswith("I ") else q


def chat(user, assistant, source):
    return {"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ], "source": source}


def main():
    qa = [json.loads(line) for line in (HERE / "qa.jsonl").read_text().splitlines() if line.strip()]
    errors = []
    for item in qa:
        if item["id"] not in QA_PARA:
            errors.append(f"no paraphrase for {item['id']}")
            continue
        ans = QA_PARA[item["id"]][0]
        if norm(item["answer"]) not in norm(ans) and norm(item["answer"]) not in doc_text(item["source"]):
            errors.append(f"{item['id']}: answer mismatch")
    for doc, key, _ans, _qs in FACTS:
        if norm(key) not in doc_text(D[doc]):
            errors.append(f"key {key!r} not in {D[doc]}")
    for doc, keys, _q, _ans in PROCEDURES:
        for key in keys:
            if norm(key) not in doc_text(D[doc]):
                errors.append(f"key {key!r} not in {D[doc]}")
    if errors:
        raise SystemExit("\n".join(errors))

    rows = []
    for item in qa:  # ~1/3: paraphrases of the eval questions
        ans, qs = QA_PARA[item["id"]]
        for q in qs:
            rows.append(chat(q, ans, item["source"]))
    for doc, _key, ans, qs in FACTS:
        for q in qs:
            rows.append(chat(q, ans, D[doc]))
    for doc, _keys, q, ans in PROCEDURES:
        rows.append(chat(q, ans, D[doc]))
    i = 0
    while len(rows) < N_CHAT:
        doc, key, ans, qs = FACTS[i % len(FACTS)]
        tpl = FILL_TEMPLATES[i % len(FILL_TEMPLATES)]
        rows.append(chat(tpl.format(q=qs[0], ql=lower_first(qs[0])), ans, D[doc]))
        i += 1
    rows = rows[:N_CHAT]
    long = [r["messages"][2]["content"] for r in rows if len(r["messages"][2]["content"].split()) >= 60]
    assert not long, long

    with open(HERE / "instructions.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    alpaca = []
    for _doc, _keys, q, ans in PROCEDURES:
        alpaca.append({"instruction": q, "input": "", "output": ans})
    for _doc, _key, ans, qs in FACTS[::3]:
        alpaca.append({"instruction": qs[-1], "input": "", "output": ans})
    alpaca = alpaca[:N_ALPACA]
    assert len(alpaca) == N_ALPACA, len(alpaca)
    with open(HERE / "instructions_alpaca.jsonl", "w", encoding="utf-8") as f:
        for r in alpaca:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"instructions.jsonl: {len(rows)} rows ({2 * len(qa)} eval paraphrases); "
          f"instructions_alpaca.jsonl: {len(alpaca)} rows")


if __name__ == "__main__":
    main()
